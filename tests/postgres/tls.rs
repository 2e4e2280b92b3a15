//! TLS to PostgreSQL as libpq's sslmode says (see src/postgres/tls.rs): the test cluster
//! serves a certificate for `localhost` and `db.hallpass.test` signed by its own CA.

use hallpass::store::postgres::{self, PgError};

use crate::{config, database, runtime};

/// Connects with `url` and `env`; whether the session is encrypted, or the failure.
fn encrypted(url: &str, env: &[(&str, &str)]) -> Result<bool, PgError> {
    let config = config(url, env);
    runtime().block_on(async {
        let pool = postgres::connect(&config).await?;
        let conn = pool.get().await?;
        let row = conn
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .await?;
        Ok(row.get(0))
    })
}

#[test]
fn sslmodes_encrypt_and_verify_as_libpq_does() {
    let db = database!();
    let port = db.cluster.port;
    let ca = db.cluster.ca_file();
    let ca = ca.to_str().unwrap();
    let other = db.cluster.other_ca_file();
    let other = other.to_str().unwrap();
    let url = |host: &str, mode: &str| {
        format!(
            "postgres://postgres@{host}:{port}/{}?sslmode={mode}",
            db.name
        )
    };
    let with_ca = |ca: &str| vec![("HALLPASS_DATABASE_CA_FILE", ca.to_string())];
    let env = |v: &Vec<(&'static str, String)>| -> Vec<(&'static str, String)> { v.clone() };
    let run = |u: String, e: Vec<(&'static str, String)>| {
        let e: Vec<(&str, &str)> = e.iter().map(|(k, v)| (*k, v.as_str())).collect();
        encrypted(&u, &e)
    };

    assert!(!run(url("127.0.0.1", "disable"), vec![]).unwrap());
    // prefer and require encrypt without checking the certificate (no CA given).
    assert!(run(url("127.0.0.1", "prefer"), vec![]).unwrap());
    assert!(run(url("127.0.0.1", "require"), vec![]).unwrap());
    // verify-full: chain and name.
    assert!(run(url("localhost", "verify-full"), env(&with_ca(ca))).unwrap());
    // The host name the certificate is for, at another address (hostaddr).
    let aliased = format!(
        "postgres://postgres@db.hallpass.test:{port}/{}?sslmode=verify-full&hostaddr=127.0.0.1",
        db.name
    );
    assert!(run(aliased, env(&with_ca(ca))).unwrap());
    let e = run(url("127.0.0.1", "verify-full"), env(&with_ca(ca))).unwrap_err();
    assert!(matches!(e, PgError::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("TLS"), "{e}");
    // verify-ca: the chain only, so the address passes.
    assert!(run(url("127.0.0.1", "verify-ca"), env(&with_ca(ca))).unwrap());
    // A CA that signed nothing here: refused by every verifying mode, and by require,
    // which checks the chain once a CA is configured (as libpq does).
    for mode in ["verify-full", "verify-ca", "require"] {
        let e = run(url("localhost", mode), env(&with_ca(other))).unwrap_err();
        assert!(matches!(e, PgError::Unavailable(_)), "{mode}: {e:?}");
    }
    // The URL's sslrootcert is the same setting.
    let inline = format!(
        "postgres://postgres@localhost:{port}/{}?sslmode=verify-full&sslrootcert={ca}",
        db.name
    );
    assert!(run(inline, vec![]).unwrap());
    // A file without a certificate is a configuration error, before any connection.
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "not a certificate\n").unwrap();
    let e = run(
        url("localhost", "verify-full"),
        env(&with_ca(empty.to_str().unwrap())),
    )
    .unwrap_err();
    assert!(matches!(e, PgError::Config(_)), "{e:?}");
    assert!(e.to_string().contains("no CA certificate"), "{e}");
}
