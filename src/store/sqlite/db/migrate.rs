//! Schema versions. `schema.sql` is the whole current schema for a new file; [`MIGRATIONS`]
//! brings a file written by an older binary up to date. Both run in one transaction, so a crash
//! halfway leaves the file at its old version.
//!
//! A file is recognised by `PRAGMA application_id` (set by schema.sql) and versioned by
//! `PRAGMA user_version`.

use std::path::Path;

use rusqlite::Connection;

use super::DbError;

/// The schema every table function in this module expects.
pub const SCHEMA: &str = include_str!("../../../../schema.sql");

/// `PRAGMA application_id` of a hallpass database ('hpas').
pub const APPLICATION_ID: i64 = 0x6870_6173;

/// The version `schema.sql` creates.
pub const CURRENT_VERSION: i64 = 4;

/// `MIGRATIONS[i]` upgrades a version `i + 1` file to version `i + 2`; each entry must end by
/// setting `PRAGMA user_version`. A new file gets `schema.sql` alone, so an entry must leave a
/// migrated file with exactly the schema `schema.sql` creates (a test compares them).
pub const MIGRATIONS: &[&str] = &[
    // 1 → 2 (issue 7): three indexes that another one already served, dropped so that each
    // device authorization and refresh rotation writes fewer B-trees and pages.
    // - device_authorizations(expires_at): the reaper walks (client_id, expires_at) instead.
    // - refresh_tokens(family): a family is one device's; revocation finds it by device_id.
    // - devices(user_id, created) loses its pending devices (user_id NULL).
    "DROP INDEX device_authorizations_expires;
     DROP INDEX refresh_tokens_family;
     DROP INDEX devices_user;
     CREATE INDEX devices_user ON devices(user_id, created) WHERE user_id IS NOT NULL;
     PRAGMA user_version = 2;",
    // 2 → 3: the device listings' order as a partial index over claimed devices, so a page of
    // them no longer sorts them all.
    "CREATE INDEX devices_claimed ON devices(created DESC, id) WHERE user_id IS NOT NULL;
     PRAGMA user_version = 3;",
    // 3 → 4 (issue 19): per-client signing algorithm, default audience and allowed resources
    // (RFC 8707); the resources a grant was for, on its device; one active signing key per
    // algorithm. ADD COLUMN rewrites no row. Version 3 kept one active key in all, so the
    // UPDATE (retiring all but the newest of an algorithm) finds nothing unless a file was
    // edited by hand; it is there so the unique index cannot fail the upgrade.
    "ALTER TABLE oauth_clients ADD COLUMN signing_algorithm TEXT;
     ALTER TABLE oauth_clients ADD COLUMN audience TEXT;
     ALTER TABLE oauth_clients ADD COLUMN allowed_resources TEXT NOT NULL DEFAULT '';
     ALTER TABLE devices ADD COLUMN resource TEXT;
     UPDATE signing_keys SET retired = activated
         WHERE activated IS NOT NULL AND retired IS NULL
         AND activated < (SELECT max(k.activated) FROM signing_keys k
                          WHERE k.algorithm = signing_keys.algorithm AND k.retired IS NULL);
     CREATE UNIQUE INDEX signing_keys_active ON signing_keys(algorithm)
    WHERE activated IS NOT NULL AND retired IS NULL;
     PRAGMA user_version = 4;",
];

/// Checks that the file at `path` is a hallpass database this binary can use, creating the
/// schema in an empty file and migrating an older one.
pub fn migrate(conn: &mut Connection, path: &Path) -> Result<(), DbError> {
    let app_id: i64 = conn.pragma_query_value(None, "application_id", |r| r.get(0))?;
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let tables: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE type = 'table'",
        [],
        |r| r.get(0),
    )?;
    if app_id == 0 && version == 0 && tables == 0 {
        let tx = super::write_tx(conn)?;
        tx.execute_batch(SCHEMA)?;
        tx.commit()?;
        return Ok(());
    }
    if app_id != APPLICATION_ID {
        return Err(DbError::Refused(format!(
            "{} is a SQLite database but not a hallpass database (application_id {app_id}); refusing to use it",
            path.display()
        )));
    }
    if version > CURRENT_VERSION {
        return Err(DbError::Refused(format!(
            "{} has schema version {version}, newer than this binary's {CURRENT_VERSION}; upgrade hallpass",
            path.display()
        )));
    }
    if version < 1 {
        return Err(DbError::Refused(format!(
            "{} has an unknown schema version {version}; refusing to use it",
            path.display()
        )));
    }
    if version < CURRENT_VERSION {
        let tx = super::write_tx(conn)?;
        for step in &MIGRATIONS[(version - 1) as usize..] {
            tx.execute_batch(step)?;
        }
        tx.commit()?;
        tracing::info!(
            from = version,
            to = CURRENT_VERSION,
            "migrated database schema"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_cover_every_version() {
        assert_eq!(MIGRATIONS.len() as i64, CURRENT_VERSION - 1);
        assert!(SCHEMA.contains(&format!("PRAGMA user_version = {CURRENT_VERSION};")));
        assert!(SCHEMA.contains(&format!("PRAGMA application_id = {APPLICATION_ID};")));
    }

    /// The schema as SQLite stores it: every table, index and trigger with its SQL.
    fn schema_of(conn: &Connection) -> Vec<(String, String, Option<String>)> {
        let mut stmt = conn
            .prepare("SELECT type, name, sql FROM sqlite_schema ORDER BY type, name")
            .unwrap();
        let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)));
        rows.unwrap().collect::<Result<_, _>>().unwrap()
    }

    /// A file made by the first release's schema (kept verbatim in migrations/v1.sql), with a
    /// row in each table a migration touched, reaches exactly the schema of a new file, and
    /// keeps its rows.
    #[test]
    fn a_version_1_file_migrates_to_the_schema_of_a_new_one() {
        let mut old = Connection::open_in_memory().unwrap();
        old.execute_batch(include_str!("migrations/v1.sql"))
            .unwrap();
        old.execute_batch(
            "INSERT INTO oauth_clients VALUES ('cli', 'CLI', NULL, '', '', NULL, 0, 0);
             INSERT INTO devices (id, client_id, status, expires, created, updated)
                 VALUES ('d1', 'cli', 'pending', 9, 0, 0);
             INSERT INTO device_authorizations (id, created_at, client_id, device_id,
                 device_code_hash, user_code, expires_at, poll_interval_seconds)
                 VALUES ('a1', 0, 'cli', 'd1', x'01', 'BCDFGHJK', 9, 5);
             INSERT INTO refresh_tokens (token_hash, device_id, family, created_at, expires_at)
                 VALUES (x'02', 'd1', 'f1', 0, 9);",
        )
        .unwrap();
        migrate(&mut old, Path::new("old.db")).unwrap();

        let mut new = Connection::open_in_memory().unwrap();
        migrate(&mut new, Path::new("new.db")).unwrap();
        assert_eq!(schema_of(&old), schema_of(&new));
        let version: i64 = old
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, CURRENT_VERSION);
        let rows: i64 = old
            .query_row(
                "SELECT (SELECT count(*) FROM devices) + (SELECT count(*) FROM \
                 device_authorizations) + (SELECT count(*) FROM refresh_tokens)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 3);
    }

    /// A file made by version 3 (schema.sql as it was, kept verbatim in migrations/v3.sql),
    /// with rows in the tables version 4 changed, reaches exactly the schema of a new file:
    /// clients get no algorithm, audience or resources (the server defaults), devices no
    /// resource, and the active key stays the active key.
    #[test]
    fn a_version_3_file_migrates_to_the_schema_of_a_new_one() {
        let mut old = Connection::open_in_memory().unwrap();
        old.execute_batch(include_str!("migrations/v3.sql"))
            .unwrap();
        old.execute_batch(
            "INSERT INTO oauth_clients VALUES ('cli', 'CLI', NULL, '', 'read', NULL, 0, 0);
             INSERT INTO devices (id, client_id, status, expires, created, updated)
                 VALUES ('d1', 'cli', 'pending', 9, 0, 0);
             INSERT INTO signing_keys VALUES ('old', 'EdDSA', x'00', x'00', 0, 1, 5);
             INSERT INTO signing_keys VALUES ('cur', 'EdDSA', x'00', x'00', 5, 6, NULL);",
        )
        .unwrap();
        migrate(&mut old, Path::new("old.db")).unwrap();

        let mut new = Connection::open_in_memory().unwrap();
        migrate(&mut new, Path::new("new.db")).unwrap();
        assert_eq!(schema_of(&old), schema_of(&new));
        let version: i64 = old
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, CURRENT_VERSION);
        let client: (Option<String>, Option<String>, String, String) = old
            .query_row(
                "SELECT signing_algorithm, audience, allowed_resources, allowed_scopes \
                 FROM oauth_clients",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .unwrap();
        assert_eq!(client, (None, None, String::new(), "read".into()));
        let resource: Option<String> = old
            .query_row("SELECT resource FROM devices WHERE id = 'd1'", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(resource, None);
        let active: String = old
            .query_row(
                "SELECT kid FROM signing_keys WHERE activated IS NOT NULL AND retired IS NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(active, "cur");
        // The new index holds one active key per algorithm, as it does in a new file.
        for conn in [&old, &new] {
            conn.execute_batch(
                "INSERT INTO signing_keys VALUES ('rsa', 'RS256', x'00', x'00', 7, 7, NULL);",
            )
            .unwrap();
            let e = conn
                .execute_batch(
                    "INSERT INTO signing_keys VALUES ('two', 'RS256', x'00', x'00', 8, 8, NULL);",
                )
                .unwrap_err();
            assert!(e.to_string().contains("UNIQUE"), "{e}");
        }
    }

    /// A version 3 file edited by hand (or by a bug) to hold two active keys still upgrades:
    /// the older one is retired, as a rotation would have.
    #[test]
    fn two_active_keys_of_version_3_leave_the_newest_active() {
        let mut old = Connection::open_in_memory().unwrap();
        old.execute_batch(include_str!("migrations/v3.sql"))
            .unwrap();
        old.execute_batch(
            "INSERT INTO signing_keys VALUES ('a', 'EdDSA', x'00', x'00', 0, 1, NULL);
             INSERT INTO signing_keys VALUES ('b', 'EdDSA', x'00', x'00', 0, 2, NULL);
             INSERT INTO signing_keys VALUES ('c', 'ES256', x'00', x'00', 0, 3, NULL);",
        )
        .unwrap();
        migrate(&mut old, Path::new("old.db")).unwrap();
        let mut stmt = old
            .prepare("SELECT kid, retired FROM signing_keys ORDER BY kid")
            .unwrap();
        let rows: Vec<(String, Option<i64>)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            rows,
            [
                ("a".into(), Some(1)),
                ("b".into(), None),
                ("c".into(), None)
            ]
        );
    }

    /// What a query's plan says, one step a line.
    fn plan(conn: &Connection, sql: &str) -> String {
        let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
        // Parameters stay unbound: the plan does not depend on their values.
        let rows = stmt.raw_query().mapped(|r| r.get::<_, String>(3));
        rows.map(Result::unwrap).collect::<Vec<_>>().join("\n")
    }

    /// The queries that used an index version 2 dropped still search an index, and none scans
    /// a table other than oauth_clients.
    #[test]
    fn queries_that_lost_an_index_still_search_one() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        let expect = [
            (
                super::super::device_authorizations::DELETE_EXPIRED,
                "INDEX device_authorizations_client (client_id=? AND expires_at<?)",
            ),
            (
                super::super::device_authorizations::COUNT_EXPIRED_UNUSED,
                "INDEX device_authorizations_client (client_id=? AND expires_at<?)",
            ),
            (
                super::super::refresh_tokens::REVOKE_FAMILY,
                "INDEX refresh_tokens_device (device_id=?)",
            ),
            (
                // devices::list_for_user, with fewer columns.
                "SELECT id FROM devices WHERE user_id = ?1 ORDER BY created DESC, id",
                "INDEX devices_user (user_id=?)",
            ),
        ];
        for (sql, step) in expect {
            let plan = plan(&conn, sql);
            assert!(plan.contains(step), "{sql}\n{plan}");
            for line in plan.lines().filter(|l| l.starts_with("SCAN ")) {
                assert!(line.starts_with("SCAN c "), "{sql}\n{plan}");
            }
        }
    }

    /// A page of the device listings (all claimed devices, or those of a client or a status)
    /// walks devices_claimed in order: no sort of every match.
    #[test]
    fn a_page_of_devices_reads_the_claimed_index_in_order() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        for (clause, n) in [
            ("user_id IS NOT NULL", 0),
            ("user_id IS NOT NULL AND client_id = ?1", 1),
            (
                "user_id IS NOT NULL AND status = ?1 AND trusted_device = ?2",
                2,
            ),
        ] {
            let sql = super::super::devices::page_query(clause, n);
            let plan = plan(&conn, &sql);
            assert!(
                plan.contains("USING INDEX devices_claimed"),
                "{sql}\n{plan}"
            );
            assert!(!plan.contains("TEMP B-TREE"), "{sql}\n{plan}");
        }
    }

    /// Deleting a user cascades to their devices through the partial index on devices(user_id):
    /// SQLite steps no full-table scan however many pending devices (user_id NULL) there are.
    #[test]
    fn deleting_a_user_finds_their_devices_through_the_partial_index() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        conn.execute_batch(
            "INSERT INTO users VALUES ('u1', 'ada', 'x', 0, 0, 0, 0);
             INSERT INTO oauth_clients (client_id, name, allowed_grants, allowed_scopes,
                 created, updated) VALUES ('cli', 'CLI', '', '', 0, 0);
             INSERT INTO devices (id, client_id, user_id, status, expires, created, updated)
                 VALUES ('mine', 'cli', 'u1', 'active', 9, 0, 0);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
             INSERT INTO devices (id, client_id, status, expires, created, updated)
                 SELECT 'p' || i, 'cli', 'pending', 9, 0, 0 FROM n;",
        )
        .unwrap();
        let mut delete = conn.prepare("DELETE FROM users WHERE id = 'u1'").unwrap();
        assert_eq!(delete.execute([]).unwrap(), 1);
        let scanned = delete.get_status(rusqlite::StatementStatus::FullscanStep);
        drop(delete);
        let left: i64 = conn
            .query_row("SELECT count(*) FROM devices", [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 500, "the user's device went, the pending ones stayed");
        assert_eq!(scanned, 0, "full-scan steps while cascading");
    }

    #[test]
    fn creates_then_accepts_then_refuses_foreign_files() {
        let mut conn = Connection::open_in_memory().unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();
        migrate(&mut conn, Path::new(":memory:")).unwrap();

        let mut other = Connection::open_in_memory().unwrap();
        other.execute_batch("CREATE TABLE t(x)").unwrap();
        let e = migrate(&mut other, Path::new("other.db")).unwrap_err();
        assert!(e.to_string().contains("not a hallpass database"), "{e}");

        conn.pragma_update(None, "user_version", CURRENT_VERSION + 1)
            .unwrap();
        let e = migrate(&mut conn, Path::new("new.db")).unwrap_err();
        assert!(e.to_string().contains("newer"), "{e}");
    }
}
