//! `hallpass migrate-db`: a whole SQLite database copied into an empty PostgreSQL one, then
//! verified, in one PostgreSQL transaction.
//!
//! The SQLite side is read in one read transaction, so the copy is one consistent snapshot
//! even while a server keeps writing the file (WAL readers neither wait for nor block it). The
//! PostgreSQL side creates the schema and fills every table (parents first) with `COPY ...
//! FROM STDIN (FORMAT binary)`, then reads every table back in primary-key order and compares
//! its row count and a SHA-256 over its rows with what was read from SQLite; only then it
//! commits. A failure anywhere leaves the PostgreSQL database as empty as it was.
//!
//! Values keep their meaning: INTEGER to BIGINT (INTEGER where PostgreSQL's column is), 0/1
//! to BOOLEAN, TEXT to TEXT, BLOB to BYTEA byte for byte (sealed signing keys included), NULL
//! to NULL. The checksum covers those values, so equal checksums mean PostgreSQL holds what
//! SQLite held.

use std::pin::pin;

use bytes::BytesMut;
use futures_util::StreamExt;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{to_sql_checked, IsNull, ToSql, Type};

use super::schema::{self, DATA_TABLES};
use super::PgError;

/// What was copied into one table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// The table.
    pub table: &'static str,
    /// Rows read from SQLite, written to PostgreSQL, and read back.
    pub rows: u64,
    /// SHA-256 over the rows in primary-key order (see [`Checksum`]), equal on both sides.
    pub checksum: [u8; 32],
}

/// One value, as both sides agree on it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int4(i32),
    Int8(i64),
    Text(String),
    Bytes(Vec<u8>),
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Bool(v) => v.to_sql(ty, out),
            Value::Int4(v) => v.to_sql(ty, out),
            Value::Int8(v) => v.to_sql(ty, out),
            Value::Text(v) => v.to_sql(ty, out),
            Value::Bytes(v) => v.to_sql(ty, out),
        }
    }

    fn accepts(_: &Type) -> bool {
        // Each value is made for its column's type (see `from_sqlite`).
        true
    }

    to_sql_checked!();
}

/// A table's rows folded into one SHA-256: each value tagged with its kind, integers (and
/// booleans, as 0/1) as 8 bytes big-endian, text and bytes with their length first, so that
/// no two different tables of rows give the same input.
pub struct Checksum {
    digest: ring::digest::Context,
    rows: u64,
}

impl Default for Checksum {
    fn default() -> Self {
        Checksum {
            digest: ring::digest::Context::new(&ring::digest::SHA256),
            rows: 0,
        }
    }
}

impl Checksum {
    /// Adds one row.
    pub fn row(&mut self, values: &[Value]) {
        self.rows += 1;
        for v in values {
            let (tag, int) = match v {
                Value::Null => (0u8, None),
                Value::Bool(b) => (1, Some(i64::from(*b))),
                Value::Int4(i) => (1, Some(i64::from(*i))),
                Value::Int8(i) => (1, Some(*i)),
                Value::Text(_) => (2, None),
                Value::Bytes(_) => (3, None),
            };
            self.digest.update(&[tag]);
            if let Some(i) = int {
                self.digest.update(&i.to_be_bytes());
            }
            let bytes: &[u8] = match v {
                Value::Text(t) => t.as_bytes(),
                Value::Bytes(b) => b,
                _ => continue,
            };
            self.digest.update(&(bytes.len() as u64).to_be_bytes());
            self.digest.update(bytes);
        }
    }

    /// The row count and the digest.
    pub fn finish(self) -> (u64, [u8; 32]) {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.digest.finish().as_ref());
        (self.rows, out)
    }
}

/// One table to copy: its PostgreSQL columns in order, with their types.
#[derive(Debug, Clone)]
struct Plan {
    table: &'static str,
    key: &'static str,
    columns: Vec<String>,
    types: Vec<Type>,
}

/// What the SQLite reader sends.
enum Msg {
    Rows(Vec<Vec<Value>>),
    /// The table is done: its row count and checksum as read.
    End(u64, [u8; 32]),
    /// sqlite_sequence's value for audit_events (AUTOINCREMENT's high-water mark).
    AuditSequence(Option<i64>),
    Failed(String),
}

/// Rows per message from the reader.
const BATCH: usize = 1000;

/// `hallpass migrate-db`: copies the SQLite database at `config.database_path` (which must
/// exist) into the empty PostgreSQL database at `config.database_url`, verified.
pub async fn migrate(config: &crate::config::Config) -> Result<Vec<Copied>, PgError> {
    let sqlite = crate::store::sqlite::SqliteStore::open(config, crate::store::Purpose::Command)
        .map_err(|e| PgError::Refused(e.to_string()))?;
    let pool = super::connect(config).await?;
    let mut conn = pool.get().await?;
    copy(sqlite.db().clone(), &mut conn).await
}

/// Copies the SQLite database `sqlite` into the empty PostgreSQL database `pg` (its
/// `current_schema()`), verifies, and commits. Refuses a PostgreSQL schema that holds any
/// table. Returns what each table received.
pub async fn copy(
    sqlite: crate::store::sqlite::db::Db,
    pg: &mut tokio_postgres::Client,
) -> Result<Vec<Copied>, PgError> {
    let tx = pg.transaction().await?;
    let target = schema::lock_and_inspect(&tx).await?;
    if target.tables > 0 {
        return Err(PgError::Refused(format!(
            "the PostgreSQL database is not empty (schema {:?} holds {} table(s)); migrate-db \
             copies only into an empty one: create a new database (CREATE DATABASE hallpass \
             OWNER hallpass) and point --to at it",
            target.schema, target.tables
        )));
    }
    schema::create(&tx, &target.schema).await?;
    let mut plans = Vec::new();
    for &(table, key) in DATA_TABLES {
        let columns: Vec<String> = tx
            .query(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = $1 \
                 ORDER BY ordinal_position",
                &[&table],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let probe = tx
            .prepare(&format!("SELECT {} FROM {table}", columns.join(", ")))
            .await?;
        let types = probe.columns().iter().map(|c| c.type_().clone()).collect();
        plans.push(Plan {
            table,
            key,
            columns,
            types,
        });
    }

    let (send, mut receive) = tokio::sync::mpsc::channel::<Msg>(4);
    let reader_plans = plans.clone();
    let reader = std::thread::spawn(move || {
        let failed = send.clone();
        let outcome = sqlite.run_sync(|conn| Ok(read_sqlite(conn, &reader_plans, &send)));
        let message = match outcome {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e,
            Err(e) => format!("reading the SQLite database: {e}"),
        };
        let _ = failed.blocking_send(Msg::Failed(message));
    });

    let mut copied = Vec::new();
    for plan in &plans {
        let sink = tx
            .copy_in(&format!(
                "COPY {} ({}) FROM STDIN (FORMAT binary)",
                plan.table,
                plan.columns.join(", ")
            ))
            .await?;
        let mut writer = pin!(BinaryCopyInWriter::new(sink, &plan.types));
        let (rows, checksum) = loop {
            match receive.recv().await {
                Some(Msg::Rows(rows)) => {
                    for row in &rows {
                        let refs: Vec<&(dyn ToSql + Sync)> =
                            row.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                        writer.as_mut().write(&refs).await?;
                    }
                }
                Some(Msg::End(rows, checksum)) => break (rows, checksum),
                Some(Msg::Failed(why)) => return Err(PgError::Refused(why)),
                Some(Msg::AuditSequence(_)) | None => {
                    return Err(PgError::Internal(format!(
                        "the SQLite reader stopped in table {}",
                        plan.table
                    )))
                }
            }
        };
        let written = writer.finish().await?;
        if written != rows {
            return Err(PgError::Internal(format!(
                "{}: read {rows} rows from SQLite but PostgreSQL took {written}",
                plan.table
            )));
        }
        copied.push(Copied {
            table: plan.table,
            rows,
            checksum,
        });
    }
    let sequence = match receive.recv().await {
        Some(Msg::AuditSequence(s)) => s,
        Some(Msg::Failed(why)) => return Err(PgError::Refused(why)),
        _ => None,
    };
    let _ = reader.join();

    // audit_events ids only grow, as AUTOINCREMENT made them: the identity continues past
    // both the largest id copied and SQLite's high-water mark.
    tx.execute(
        "SELECT setval(pg_get_serial_sequence('audit_events', 'id'), m) \
         FROM (SELECT greatest(max(id), $1) AS m FROM audit_events) s WHERE m IS NOT NULL",
        &[&sequence],
    )
    .await?;

    // Read everything back and compare.
    for (plan, expected) in plans.iter().zip(&copied) {
        let (rows, checksum) = checksum_postgres(&tx, plan).await?;
        if (rows, checksum) != (expected.rows, expected.checksum) {
            return Err(PgError::Internal(format!(
                "verification failed for {}: SQLite had {} rows, PostgreSQL has {rows}{}; \
                 nothing was committed",
                plan.table,
                expected.rows,
                if rows == expected.rows {
                    " with different contents"
                } else {
                    ""
                }
            )));
        }
    }
    tx.commit().await?;
    Ok(copied)
}

/// Row count and checksum of one PostgreSQL table, read in primary-key order.
async fn checksum_postgres(
    tx: &tokio_postgres::Transaction<'_>,
    plan: &Plan,
) -> Result<(u64, [u8; 32]), PgError> {
    let sql = format!(
        "SELECT {} FROM {} ORDER BY {}",
        plan.columns.join(", "),
        plan.table,
        plan.key
    );
    let rows = tx.query_raw(&sql, std::iter::empty::<i32>()).await?;
    let mut rows = pin!(rows);
    let mut sum = Checksum::default();
    let mut values = Vec::with_capacity(plan.columns.len());
    while let Some(row) = rows.next().await {
        let row = row?;
        values.clear();
        for (i, ty) in plan.types.iter().enumerate() {
            values.push(from_postgres(&row, i, ty)?);
        }
        sum.row(&values);
    }
    Ok(sum.finish())
}

/// A PostgreSQL value as a [`Value`].
pub fn from_postgres(row: &tokio_postgres::Row, i: usize, ty: &Type) -> Result<Value, PgError> {
    Ok(match *ty {
        Type::BOOL => row
            .try_get::<_, Option<bool>>(i)?
            .map_or(Value::Null, Value::Bool),
        Type::INT4 => row
            .try_get::<_, Option<i32>>(i)?
            .map_or(Value::Null, Value::Int4),
        Type::INT8 => row
            .try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::Int8),
        Type::TEXT => row
            .try_get::<_, Option<String>>(i)?
            .map_or(Value::Null, Value::Text),
        Type::BYTEA => row
            .try_get::<_, Option<Vec<u8>>>(i)?
            .map_or(Value::Null, Value::Bytes),
        ref other => {
            return Err(PgError::Internal(format!(
                "column {i} has type {other}, which migrate-db does not copy"
            )))
        }
    })
}

/// A SQLite value for a PostgreSQL column of type `ty`, or why it does not fit.
pub fn from_sqlite(value: rusqlite::types::ValueRef<'_>, ty: &Type) -> Result<Value, String> {
    use rusqlite::types::ValueRef as V;
    Ok(match (value, ty) {
        (V::Null, _) => Value::Null,
        (V::Integer(i @ (0 | 1)), &Type::BOOL) => Value::Bool(i == 1),
        (V::Integer(i), &Type::INT4) => {
            Value::Int4(i32::try_from(i).map_err(|_| format!("{i} does not fit an INTEGER"))?)
        }
        (V::Integer(i), &Type::INT8) => Value::Int8(i),
        (V::Text(t), &Type::TEXT) => Value::Text(
            String::from_utf8(t.to_vec()).map_err(|_| "text that is not UTF-8".to_string())?,
        ),
        (V::Blob(b), &Type::BYTEA) => Value::Bytes(b.to_vec()),
        (other, ty) => {
            return Err(format!(
                "a {:?} value where PostgreSQL's column is {ty}",
                other.data_type()
            ))
        }
    })
}

/// The reader's side, on its own thread: every table of `plans` from one read transaction,
/// in primary-key order, in batches down `send`.
fn read_sqlite(
    conn: &mut rusqlite::Connection,
    plans: &[Plan],
    send: &tokio::sync::mpsc::Sender<Msg>,
) -> Result<(), String> {
    let sql_error = |e: rusqlite::Error| format!("reading the SQLite database: {e}");
    // One deferred transaction: its first read fixes the snapshot every later read sees.
    let tx = conn.transaction().map_err(sql_error)?;
    let stopped = || "the PostgreSQL side stopped".to_string();
    for plan in plans {
        let sqlite_columns: Vec<String> = {
            let mut stmt = tx
                .prepare("SELECT name FROM pragma_table_info(?1)")
                .map_err(sql_error)?;
            let names = stmt
                .query_map([plan.table], |r| r.get(0))
                .map_err(sql_error)?;
            names.collect::<Result<_, _>>().map_err(sql_error)?
        };
        let mut expected = plan.columns.clone();
        let mut found = sqlite_columns.clone();
        expected.sort();
        found.sort();
        if expected != found {
            return Err(format!(
                "table {}: SQLite has columns {} but PostgreSQL's schema has {}; is the SQLite \
                 file from another version of hallpass?",
                plan.table,
                sqlite_columns.join(", "),
                plan.columns.join(", ")
            ));
        }
        let mut stmt = tx
            .prepare(&format!(
                "SELECT {} FROM {} ORDER BY {}",
                plan.columns.join(", "),
                plan.table,
                plan.key
            ))
            .map_err(sql_error)?;
        let mut rows = stmt.query([]).map_err(sql_error)?;
        let mut sum = Checksum::default();
        let mut batch = Vec::with_capacity(BATCH);
        while let Some(row) = rows.next().map_err(sql_error)? {
            let mut values = Vec::with_capacity(plan.columns.len());
            for (i, ty) in plan.types.iter().enumerate() {
                let raw = row.get_ref(i).map_err(sql_error)?;
                values.push(
                    from_sqlite(raw, ty)
                        .map_err(|why| format!("{}.{}: {why}", plan.table, plan.columns[i]))?,
                );
            }
            sum.row(&values);
            batch.push(values);
            if batch.len() == BATCH {
                send.blocking_send(Msg::Rows(std::mem::take(&mut batch)))
                    .map_err(|_| stopped())?;
            }
        }
        if !batch.is_empty() {
            send.blocking_send(Msg::Rows(batch))
                .map_err(|_| stopped())?;
        }
        let (n, digest) = sum.finish();
        send.blocking_send(Msg::End(n, digest))
            .map_err(|_| stopped())?;
    }
    let sequence: Option<i64> = tx
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'audit_events'",
            [],
            |r| r.get(0),
        )
        .map(Some)
        .or_else(|e| match e {
            rusqlite::Error::QueryReturnedNoRows => Ok(None),
            e => Err(e),
        })
        .map_err(sql_error)?;
    send.blocking_send(Msg::AuditSequence(sequence))
        .map_err(|_| stopped())?;
    Ok(())
}
