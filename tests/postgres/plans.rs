//! The hot statements' plans do not depend on the tables' statistics. A prepared statement's
//! generic plan is made once (after five runs) and kept until the statistics change, so a plan
//! chosen while a table was nearly empty must still be right when it holds a million rows: on a
//! fresh database, device authorizations fell to ~800 a second (~1.2 ms of server CPU each)
//! because START's eviction joined `devices` with `IN (SELECT …)`, planned as a scan of every
//! device.

use hallpass::store::postgres::{self, flow_sql};

use crate::{config, database, runtime};

/// The generic plan of `sql` on the test database as it is, one line per node.
async fn generic_plan(conn: &tokio_postgres::Client, sql: &str, params: usize) -> String {
    conn.batch_execute(&format!(
        "SET plan_cache_mode = force_generic_plan; PREPARE hot AS {sql}"
    ))
    .await
    .unwrap();
    let nulls = vec!["NULL"; params].join(", ");
    let rows = conn
        .query(&format!("EXPLAIN EXECUTE hot({nulls})"), &[])
        .await
        .unwrap();
    conn.batch_execute("DEALLOCATE hot").await.unwrap();
    rows.iter()
        .map(|r| r.get::<_, String>(0))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A connection to `url`'s database once hallpass has created its schema there: every table
/// empty and never analyzed, as on a first start.
async fn fresh_schema(url: &str) -> tokio_postgres::Client {
    drop(postgres::open(&config(url, &[])).await.unwrap());
    let (conn, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    conn
}

#[test]
fn starting_an_authorization_reads_no_table_through_while_tables_are_empty() {
    let db = database!();
    runtime().block_on(async {
        let conn = fresh_schema(&db.url()).await;
        let plan = generic_plan(&conn, flow_sql::START, 19).await;
        for table in ["devices", "device_authorizations"] {
            assert!(
                !plan.contains(&format!("Seq Scan on {table}")),
                "START's generic plan scans {table}:\n{plan}"
            );
        }
    });
}

/// The reaper's count and purge of expired authorizations read the (client_id, expires_at)
/// index client by client, never the whole index or the table: 20,000 live codes of two
/// clients, a hundred of them expired. The codes' tables are analyzed, as autovacuum does as they grow;
/// `oauth_clients` is not, as autovacuum never does for a table of a few rows (under its
/// threshold of 50 changes), so the planner guesses it large. The plain join was then planned
/// as a read of every code's index entry (or of the table) at every reaper pass.
#[test]
fn reaping_authorizations_reads_ranges_of_the_index_client_by_client() {
    let db = database!();
    runtime().block_on(async {
        let conn = fresh_schema(&db.url()).await;
        conn.batch_execute(
            "INSERT INTO oauth_clients (client_id, name, allowed_grants, allowed_scopes, \
                 created, updated) VALUES ('c1', 'one', '', '', 0, 0), ('c2', 'two', '', '', 0, 0); \
             INSERT INTO devices (id, client_id, name, status, expires, created, updated) \
                 SELECT 'd' || i, 'c' || (1 + i % 2), NULL, 'pending', 600000 + i, 0, 0 \
                 FROM generate_series(1, 20000) i; \
             INSERT INTO device_authorizations (id, created_at, client_id, device_id, \
                 device_code_hash, user_code, expires_at, poll_interval_seconds) \
                 SELECT 'a' || i, 0, 'c' || (1 + i % 2), 'd' || i, \
                 decode(md5(i::text), 'hex'), 'U' || i, \
                 CASE WHEN i <= 100 THEN i ELSE 600000 + i END, 5 \
                 FROM generate_series(1, 20000) i; \
             ANALYZE devices; ANALYZE device_authorizations",
        )
        .await
        .unwrap();
        let count = flow_sql::COUNT_EXPIRED_UNUSED.replace("$1", "1000");
        let expired = conn.query_one(&count, &[]).await.unwrap();
        assert_eq!(expired.get::<_, i64>(0), 100);
        for (name, sql) in [
            ("the count", flow_sql::COUNT_EXPIRED_UNUSED.replace("$1", "1000")),
            (
                "the purge",
                flow_sql::PURGE_AUTHORIZATIONS
                    .replace("$1", "1000")
                    .replace("$2", "1000"),
            ),
        ] {
            let rows = conn
                .query(&format!("EXPLAIN (ANALYZE, BUFFERS) {sql}"), &[])
                .await
                .unwrap();
            let plan = rows
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n");
            assert!(
                !plan.contains("Seq Scan on device_authorizations"),
                "{name} scans the table:\n{plan}"
            );
            // Every read of the index names the client: a range, not a pass over it all.
            for line in plan.lines().filter(|l| l.contains("Index Cond")) {
                if line.contains("expires_at") {
                    assert!(line.contains("client_id"), "{name} reads the whole index:\n{plan}");
                }
            }
        }
        // EXPLAIN ANALYZE ran the purge: the hundred expired codes went, and only they.
        let expired = conn.query_one(&count, &[]).await.unwrap();
        assert_eq!(expired.get::<_, i64>(0), 0);
        let left = conn.query_one("SELECT count(*) FROM device_authorizations", &[]).await;
        assert_eq!(left.unwrap().get::<_, i64>(0), 19_900);
    });
}
