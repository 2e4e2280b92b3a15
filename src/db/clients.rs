//! SQL for the `oauth_clients` table.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::DbError;
use crate::oauth::jwt::Algorithm;
use crate::oauth::resource;

/// An OAuth client: a kind of device software (a CLI, a TV app) that asks for codes.
#[derive(Debug, Clone)]
pub struct Client {
    /// UUID, sent by the device as `client_id`.
    pub client_id: String,
    /// Shown to the person on the approval page.
    pub name: String,
    /// SHA-256 of the secret; `None` for a public client, which cannot keep a secret.
    pub secret_hash: Option<Vec<u8>>,
    /// Grant type URIs this client may use.
    pub allowed_grants: Vec<String>,
    /// Space-separated scopes this client may request.
    pub allowed_scopes: String,
    /// The user who owns the client; `None` for clients made by an operator.
    pub owner_user_id: Option<String>,
    /// The algorithm of this client's access tokens, for resource servers that accept only
    /// some; `None` follows `oauth.signing_algorithm`.
    pub signing_algorithm: Option<Algorithm>,
    /// The `aud` of its tokens when no resource is named (RFC 9068 §3); `None` follows
    /// `oauth.audience`, else the issuer.
    pub audience: Option<String>,
    /// Resource indicators (RFC 8707) it may name besides its default audience.
    pub allowed_resources: Vec<String>,
    /// Creation time, ms.
    pub created: i64,
    /// Last update, ms.
    pub updated: i64,
}

impl Client {
    /// A confidential client authenticates with a secret.
    pub fn is_confidential(&self) -> bool {
        self.secret_hash.is_some()
    }

    /// Whether the client may use `grant`.
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.allowed_grants.iter().any(|g| g == grant)
    }

    /// The algorithm its tokens are signed with, given the server's default.
    pub fn algorithm(&self, server_default: Algorithm) -> Algorithm {
        self.signing_algorithm.unwrap_or(server_default)
    }

    /// What it may name as a resource, given the server's default audience (`oauth.audience`,
    /// else the issuer).
    pub fn allowed<'a>(&'a self, server_default: &'a str) -> resource::Allowed<'a> {
        resource::Allowed {
            resources: &self.allowed_resources,
            default: self.audience.as_deref().unwrap_or(server_default),
        }
    }

    /// A public system client named "CLI" with these scopes: the unit tests' fixture.
    #[cfg(test)]
    pub fn public_for_tests(client_id: &str, allowed_scopes: &str) -> Client {
        Client {
            client_id: client_id.into(),
            name: "CLI".into(),
            secret_hash: None,
            allowed_grants: vec![],
            allowed_scopes: allowed_scopes.into(),
            owner_user_id: None,
            signing_algorithm: None,
            audience: None,
            allowed_resources: vec![],
            created: 0,
            updated: 0,
        }
    }
}

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
