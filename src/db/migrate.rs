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
pub const SCHEMA: &str = include_str!("../../schema.sql");

/// `PRAGMA application_id` of a hallpass database ('hpas').
pub const APPLICATION_ID: i64 = 0x6870_6173;

/// The version `schema.sql` creates.
pub const CURRENT_VERSION: i64 = 1;

/// `MIGRATIONS[i]` upgrades a version `i + 1` file to version `i + 2`. Empty while there has
/// been only one version; each entry must end by setting `PRAGMA user_version`.
pub const MIGRATIONS: &[&str] = &[];

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
