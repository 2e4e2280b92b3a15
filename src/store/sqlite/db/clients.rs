//! SQL for the `oauth_clients` table.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::DbError;
use crate::domain::model::Client;
use crate::protocol::jwt::Algorithm;
use crate::protocol::resource;

const COLUMNS: &str = "client_id, name, secret_hash, allowed_grants, allowed_scopes, \
    owner_user_id, created, updated, signing_algorithm, audience, allowed_resources";

fn from_row(r: &Row<'_>) -> rusqlite::Result<Client> {
    let grants: String = r.get(3)?;
    // An algorithm this binary does not know (written by a newer one) follows the default.
    let algorithm: Option<String> = r.get(8)?;
    let resources: String = r.get(10)?;
    Ok(Client {
        client_id: r.get(0)?,
        name: r.get(1)?,
        secret_hash: r.get(2)?,
        allowed_grants: grants.split_whitespace().map(str::to_string).collect(),
        allowed_scopes: r.get(4)?,
        owner_user_id: r.get(5)?,
        created: r.get(6)?,
        updated: r.get(7)?,
        signing_algorithm: algorithm.as_deref().and_then(Algorithm::parse),
        audience: r.get(9)?,
        allowed_resources: resource::from_stored(&resources),
    })
}

/// Inserts a client.
pub fn insert(conn: &Connection, c: &Client) -> Result<(), DbError> {
    conn.prepare_cached(&format!(
        "INSERT INTO oauth_clients ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)"
    ))?
    .execute(params![
        c.client_id,
        c.name,
        c.secret_hash,
        c.allowed_grants.join(" "),
        c.allowed_scopes,
        c.owner_user_id,
        c.created,
        c.updated,
        c.signing_algorithm.map(Algorithm::as_str),
        c.audience,
        resource::to_stored(&c.allowed_resources),
    ])?;
    Ok(())
}

/// Looks a client up by id.
pub fn find(conn: &Connection, client_id: &str) -> Result<Option<Client>, DbError> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM oauth_clients WHERE client_id = ?1"
        ))?
        .query_row([client_id], from_row)
        .optional()?)
}

/// Every client, oldest first.
pub fn list(conn: &Connection) -> Result<Vec<Client>, DbError> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM oauth_clients ORDER BY created, client_id"
    ))?;
    let rows = stmt.query_map([], from_row)?;
    Ok(rows.collect::<Result<_, _>>()?)
}

/// Updates everything but the id, the secret and the creation time. Returns false for an
/// unknown client.
pub fn update(conn: &Connection, c: &Client, now: i64) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached(
            "UPDATE oauth_clients SET name = ?2, allowed_grants = ?3, allowed_scopes = ?4, \
             owner_user_id = ?5, updated = ?6, signing_algorithm = ?7, audience = ?8, \
             allowed_resources = ?9 WHERE client_id = ?1",
        )?
        .execute(params![
            c.client_id,
            c.name,
            c.allowed_grants.join(" "),
            c.allowed_scopes,
            c.owner_user_id,
            now,
            c.signing_algorithm.map(Algorithm::as_str),
            c.audience,
            resource::to_stored(&c.allowed_resources),
        ])?
        == 1)
}

/// Replaces the secret hash (rotation). Returns false for an unknown client.
pub fn set_secret(
    conn: &Connection,
    client_id: &str,
    secret_hash: &[u8],
    now: i64,
) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached(
            "UPDATE oauth_clients SET secret_hash = ?2, updated = ?3 WHERE client_id = ?1",
        )?
        .execute(params![client_id, secret_hash, now])?
        == 1)
}

/// Deletes a client; its devices, their authorizations and refresh tokens go with it.
pub fn delete(conn: &Connection, client_id: &str) -> Result<bool, DbError> {
    Ok(conn
        .prepare_cached("DELETE FROM oauth_clients WHERE client_id = ?1")?
        .execute([client_id])?
        == 1)
}
