//! The PostgreSQL schema's versions: `schema.sql` beside this file creates the whole current
//! schema in an empty database; [`MIGRATIONS`] will bring an older one up to date. The version
//! numbers are SQLite's (src/db/migrate.rs): PostgreSQL starts at version 4, the version that
//! was current when it came, so a version means the same tables on both backends.
//!
//! A database is recognised by its `hallpass_schema` row (SQLite: `PRAGMA application_id`)
//! and refused when it holds other tables but no such row (someone else's database), or a
//! version newer than this binary's. Instances that start together on an empty database
//! serialize on a transaction-scoped advisory lock: the first creates the schema, the others
//! wait, then find it made. (A transaction-scoped lock, unlike a session one, also works
//! through PgBouncer's transaction mode.)

use tokio_postgres::error::SqlState;

use super::PgError;

/// The whole current schema, for an empty database.
pub const SCHEMA: &str = include_str!("schema.sql");

/// The version `schema.sql` creates: SQLite's current version (`db::migrate::CURRENT_VERSION`).
pub const CURRENT_VERSION: i32 = 4;

/// The first version a PostgreSQL database can have.
pub const FIRST_VERSION: i32 = 4;

/// `MIGRATIONS[i]` upgrades a version `FIRST_VERSION + i` database to the next version; each
/// must end by updating `hallpass_schema.version`, and must leave a migrated database with
/// exactly the schema `schema.sql` creates. None yet.
pub const MIGRATIONS: &[&str] = &[];

/// The advisory lock that schema changes take ('hpasmigr'). Advisory locks are per database,
/// so hallpass databases in two schemas of one database share it: harmless, their
/// migrations just wait for each other.
pub const MIGRATION_LOCK: i64 = 0x6870_6173_6d69_6772;

/// The tables of hallpass's data (SQLite's schema's), parents before children so that their
/// foreign keys hold while `hallpass migrate-db` copies them in this order, each with its
/// primary key (rows compare in its order; ids are `COLLATE "C"`, so that order is SQLite's).
pub const DATA_TABLES: &[(&str, &str)] = &[
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

/// What [`migrate`] found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrated {
    /// The database was empty: the schema was created.
    Created,
    /// The schema was at an older version and was brought up to date.
    Upgraded { from: i32 },
    /// The schema was current.
    Current,
}

/// Checks that the database `conn` is connected to (its `current_schema()`) is a hallpass
/// database this binary can use: creates the schema in an empty one, migrates an older one,
/// and refuses another program's or a newer binary's. One transaction, under
/// [`MIGRATION_LOCK`].
pub async fn migrate(conn: &mut tokio_postgres::Client) -> Result<Migrated, PgError> {
    let tx = conn.transaction().await?;
    let Target { schema, tables } = lock_and_inspect(&tx).await?;
    let marked: bool = tx
        .query_one(
            "SELECT to_regclass(format('%I.hallpass_schema', $1::text)) IS NOT NULL",
            &[&schema],
        )
        .await?
        .get(0);
    if tables == 0 {
        create(&tx, &schema).await?;
        tx.commit().await?;
        tracing::info!(schema = %schema, version = CURRENT_VERSION, "created the database schema");
        return Ok(Migrated::Created);
    }
    if !marked {
        return Err(PgError::Refused(format!(
            "schema {schema:?} of this PostgreSQL database holds {tables} table(s) but is not a \
             hallpass database (no hallpass_schema table); refusing to use it: give hallpass an \
             empty database or schema"
        )));
    }
    let row = tx
        .query_opt(
            "SELECT application, version FROM hallpass_schema WHERE singleton",
            &[],
        )
        .await?;
    let Some(row) = row else {
        return Err(PgError::Refused(format!(
            "schema {schema:?}: hallpass_schema is empty; refusing to use a database whose \
             version is unknown"
        )));
    };
    let version: i32 = row.get(1);
    if version > CURRENT_VERSION {
        return Err(PgError::Refused(format!(
            "schema {schema:?} has hallpass schema version {version}, newer than this binary's \
             {CURRENT_VERSION}; upgrade hallpass"
        )));
    }
    if version < FIRST_VERSION {
        return Err(PgError::Refused(format!(
            "schema {schema:?} has an unknown hallpass schema version {version}; refusing to \
             use it"
        )));
    }
    if version == CURRENT_VERSION {
        tx.commit().await?;
        return Ok(Migrated::Current);
    }
    for step in &MIGRATIONS[(version - FIRST_VERSION) as usize..] {
        tx.batch_execute(step).await?;
    }
    tx.commit().await?;
    tracing::info!(
        from = version,
        to = CURRENT_VERSION,
        "migrated database schema"
    );
    Ok(Migrated::Upgraded { from: version })
}

/// What a database holds, for `hallpass check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Found {
    /// No table: the schema will be created.
    Empty { schema: String },
    /// A hallpass database at `version`.
    Hallpass { schema: String, version: i32 },
    /// Someone else's tables.
    Foreign { schema: String, tables: i64 },
}

/// What the database `conn` is connected to holds, read without a lock and without writing.
pub async fn inspect(conn: &tokio_postgres::Client) -> Result<Found, PgError> {
    let row = conn
        .query_one(
            "SELECT current_schema(), (SELECT count(*) FROM pg_class c JOIN pg_namespace n \
             ON n.oid = c.relnamespace WHERE n.nspname = current_schema() \
             AND c.relkind IN ('r', 'p')), \
             to_regclass(format('%I.hallpass_schema', current_schema())) IS NOT NULL",
            &[],
        )
        .await?;
    let schema: Option<String> = row.get(0);
    let Some(schema) = schema else {
        return Err(PgError::Refused(
            "the connection's search_path names no schema that exists".into(),
        ));
    };
    let tables: i64 = row.get(1);
    let marked: bool = row.get(2);
    if tables == 0 {
        return Ok(Found::Empty { schema });
    }
    if !marked {
        return Ok(Found::Foreign { schema, tables });
    }
    let version: Option<i32> = conn
        .query_opt("SELECT version FROM hallpass_schema WHERE singleton", &[])
        .await?
        .map(|r| r.get(0));
    Ok(Found::Hallpass {
        schema,
        version: version.unwrap_or(0),
    })
}

/// The schema hallpass's tables go in, and how many tables it holds now.
pub struct Target {
    /// `current_schema()`: the first schema of the search_path that exists.
    pub schema: String,
    /// Tables in it (any program's).
    pub tables: i64,
}

/// Takes [`MIGRATION_LOCK`] for the rest of `tx`, then finds where hallpass's tables go and
/// how many tables are there already.
pub async fn lock_and_inspect(tx: &tokio_postgres::Transaction<'_>) -> Result<Target, PgError> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let schema: Option<String> = tx.query_one("SELECT current_schema()", &[]).await?.get(0);
    let Some(schema) = schema else {
        return Err(PgError::Refused(
            "the connection's search_path names no schema that exists; create one (e.g. \
             CREATE SCHEMA hallpass AUTHORIZATION <role>) or reset search_path"
                .into(),
        ));
    };
    let tables: i64 = tx
        .query_one(
            "SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')",
            &[&schema],
        )
        .await?
        .get(0);
    Ok(Target { schema, tables })
}

/// Creates the current schema in `schema` (empty; see [`lock_and_inspect`]) within `tx`.
pub async fn create(tx: &tokio_postgres::Transaction<'_>, schema: &str) -> Result<(), PgError> {
    tx.batch_execute(SCHEMA)
        .await
        .map_err(|e| cannot_create(schema, e))
}

/// A failure to create the schema, with what to do when it is the common one: PostgreSQL 15
/// stopped letting every role create tables in `public`.
fn cannot_create(schema: &str, e: tokio_postgres::Error) -> PgError {
    if e.code() == Some(&SqlState::INSUFFICIENT_PRIVILEGE) {
        return PgError::Refused(format!(
            "cannot create hallpass's tables in schema {schema:?}: {}; make hallpass's role \
             the database's owner (CREATE DATABASE hallpass OWNER hallpass), or grant it CREATE \
             on the schema",
            super::describe(&e)
        ));
    }
    e.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_line_up_with_sqlite() {
        assert_eq!(
            i64::from(CURRENT_VERSION),
            crate::store::sqlite::db::migrate::CURRENT_VERSION,
            "a new SQLite version needs its PostgreSQL migration (and the reverse)"
        );
        assert_eq!(MIGRATIONS.len() as i32, CURRENT_VERSION - FIRST_VERSION);
        assert!(SCHEMA.contains(&format!("VALUES ('hallpass', {CURRENT_VERSION},")));
    }

    /// Every table of SQLite's schema is here, with every index; the coordination tables come
    /// on top.
    #[test]
    fn every_sqlite_table_and_index_has_its_postgresql_twin() {
        let sqlite = crate::store::sqlite::db::migrate::SCHEMA;
        for (table, _) in DATA_TABLES {
            assert!(
                sqlite.contains(&format!("CREATE TABLE {table} (")),
                "{table}"
            );
            assert!(
                SCHEMA.contains(&format!("CREATE TABLE {table} (")),
                "{table}"
            );
        }
        for line in sqlite.lines() {
            let line = line.trim();
            let Some(rest) = line
                .strip_prefix("CREATE INDEX ")
                .or_else(|| line.strip_prefix("CREATE UNIQUE INDEX "))
            else {
                continue;
            };
            let name = rest.split_whitespace().next().unwrap();
            assert!(SCHEMA.contains(&format!("INDEX {name} ON ")), "{name}");
        }
    }
}
