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

#[test]
fn starting_an_authorization_reads_no_table_through_while_tables_are_empty() {
    let db = database!();
    let config = config(&db.url(), &[]);
    runtime().block_on(async {
        // Creates the schema: every table empty and never analyzed, as on a first start.
        drop(postgres::open(&config).await.unwrap());
        let (conn, connection) = tokio_postgres::connect(&db.url(), tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        let plan = generic_plan(&conn, flow_sql::START, 19).await;
        for table in ["devices", "device_authorizations"] {
            assert!(
                !plan.contains(&format!("Seq Scan on {table}")),
                "START's generic plan scans {table}:\n{plan}"
            );
        }
    });
}
