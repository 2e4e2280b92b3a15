//! What several PostgreSQL store methods share: the `oauth_clients`, `users` and `devices` rows
//! as domain records, the client of a grant authenticated in the grant's own trip, and the
//! active key of an algorithm.
//! Each function takes a connection or a transaction (`GenericClient`) and prepares its
//! statement once per connection.

use std::sync::Arc;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::PgError;
use crate::domain::model::{Client, ClientCredentials, Device, DeviceStatus, User};
use crate::domain::rules;
use crate::protocol::error::OAuthError;
use crate::protocol::jwt::Algorithm;
use crate::protocol::resource;
use crate::secrets;
use crate::store::{ActiveKey, Caller, ClientAuth};

/// The columns [`client_from_row`] reads, in its order.
pub const CLIENT_COLUMNS: &str = "client_id, name, secret_hash, allowed_grants, allowed_scopes, \
    owner_user_id, created, updated, signing_algorithm, audience, allowed_resources";

/// A client from the [`CLIENT_COLUMNS`] of `r`, starting at column `at`.
pub fn client_from_row(r: &Row, at: usize) -> Result<Client, PgError> {
    let grants: String = r.try_get(at + 3)?;
    // An algorithm this binary does not know (written by a newer one) follows the default.
    let algorithm: Option<String> = r.try_get(at + 8)?;
    let resources: String = r.try_get(at + 10)?;
    Ok(Client {
        client_id: r.try_get(at)?,
        name: r.try_get(at + 1)?,
        secret_hash: r.try_get(at + 2)?,
        allowed_grants: grants.split_whitespace().map(str::to_string).collect(),
        allowed_scopes: r.try_get(at + 4)?,
        owner_user_id: r.try_get(at + 5)?,
        created: r.try_get(at + 6)?,
        updated: r.try_get(at + 7)?,
        signing_algorithm: algorithm.as_deref().and_then(Algorithm::parse),
        audience: r.try_get(at + 9)?,
        allowed_resources: resource::from_stored(&resources),
    })
}

/// A client by id.
pub async fn find_client<C: GenericClient>(
    client: &C,
    client_id: &str,
) -> Result<Option<Client>, PgError> {
    let stmt = client
        .prepare_cached(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oauth_clients WHERE client_id = $1"
        ))
        .await?;
    match client.query_opt(&stmt, &[&client_id]).await? {
        Some(r) => Ok(Some(client_from_row(&r, 0)?)),
        None => Ok(None),
    }
}

/// Reads the client `creds` name and checks the credentials (secrets compared in constant
/// time, as hashes, by the shared rule).
pub async fn verify_client<C: GenericClient>(
    client: &C,
    creds: &ClientCredentials,
) -> Result<Result<Client, OAuthError>, PgError> {
    let found = if creds.client_id.len() > 200 {
        None
    } else {
        find_client(client, &creds.client_id).await?
    };
    Ok(rules::authenticate(found, creds))
}

/// Authenticates `auth`'s caller and checks it may use `auth.grant`. Answers the client and
/// whether it was read here (not known already).
pub async fn authenticate<C: GenericClient>(
    client: &C,
    auth: &ClientAuth,
) -> Result<Result<(Arc<Client>, bool), OAuthError>, PgError> {
    let (found, fresh) = match &auth.caller {
        Caller::Known(c) => (c.clone(), false),
        Caller::Presented(creds) => match verify_client(client, creds).await? {
            Ok(c) => (Arc::new(c), true),
            Err(e) => return Ok(Err(e)),
        },
        Caller::RefreshTokenOwner(token) => {
            let stmt = client
                .prepare_cached(&format!(
                    "SELECT {} FROM refresh_tokens r JOIN devices d ON d.id = r.device_id \
                     JOIN oauth_clients c ON c.client_id = d.client_id WHERE r.token_hash = $1",
                    prefixed("c", CLIENT_COLUMNS)
                ))
                .await?;
            let key = secrets::token_key(token);
            let owner = match client.query_opt(&stmt, &[&key]).await? {
                Some(r) => Some(client_from_row(&r, 0)?),
                None => None,
            };
            match rules::refresh_token_owner(owner) {
                Ok(c) => (Arc::new(c), true),
                Err(e) => return Ok(Err(e)),
            }
        }
    };
    if let Err(e) = rules::check_grant(&found, auth.grant) {
        return Ok(Err(e));
    }
    Ok(Ok((found, fresh)))
}

/// The active key's id of `algorithm`, if it has one.
pub async fn active_kid<C: GenericClient>(
    client: &C,
    algorithm: Algorithm,
) -> Result<Option<String>, PgError> {
    let stmt = client
        .prepare_cached(
            "SELECT kid FROM signing_keys WHERE algorithm = $1 \
             AND activated IS NOT NULL AND retired IS NULL",
        )
        .await?;
    Ok(client
        .query_opt(&stmt, &[&algorithm.as_str()])
        .await?
        .map(|r| r.get(0)))
}

/// Which key is active for `found`'s algorithm (given the server's `default`): read in the
/// trip of a grant that ends in a token, so the signer cache is confirmed without a trip of
/// its own.
pub async fn active_key<C: GenericClient>(
    client: &C,
    found: &Client,
    default: Algorithm,
) -> Result<ActiveKey, PgError> {
    let algorithm = found.algorithm(default);
    Ok(ActiveKey {
        algorithm,
        kid: active_kid(client, algorithm).await?,
    })
}

/// `columns` (comma-separated) each prefixed with `table.`.
pub fn prefixed(table: &str, columns: &str) -> String {
    columns
        .split(',')
        .map(|c| format!("{table}.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `users` columns [`user_from_row`] reads, in its order.
pub const USER_COLUMNS: &str = "id, username, password_hash, is_admin, disabled, created, updated";

/// The `devices` columns [`device_from_row`] reads, in its order.
pub const DEVICE_COLUMNS: &str = "id, client_id, user_id, name, status, trusted_device, \
    expires, os, ip_address, hostname, city, region, country, last_login, device_metadata, \
    failed_auth_attempts, created, updated, resource";

/// How many columns [`DEVICE_COLUMNS`] names.
pub const DEVICE_WIDTH: usize = 19;

/// A user from the [`USER_COLUMNS`] of `r`, starting at column `at`.
pub fn user_from_row(r: &Row, at: usize) -> Result<User, PgError> {
    Ok(User {
        id: r.try_get(at)?,
        username: r.try_get(at + 1)?,
        password_hash: r.try_get(at + 2)?,
        is_admin: r.try_get(at + 3)?,
        disabled: r.try_get(at + 4)?,
        created: r.try_get(at + 5)?,
        updated: r.try_get(at + 6)?,
    })
}

/// [`user_from_row`], or `None` when the columns are NULL (an outer join that found none).
pub fn optional_user(r: &Row, at: usize) -> Result<Option<User>, PgError> {
    match r.try_get::<_, Option<String>>(at)? {
        Some(_) => user_from_row(r, at).map(Some),
        None => Ok(None),
    }
}

/// A device from the [`DEVICE_COLUMNS`] of `r`, starting at column `at`.
pub fn device_from_row(r: &Row, at: usize) -> Result<Device, PgError> {
    let status: String = r.try_get(at + 4)?;
    let attempts: i32 = r.try_get(at + 15)?;
    let stored_resource: Option<String> = r.try_get(at + 18)?;
    Ok(Device {
        id: r.try_get(at)?,
        client_id: r.try_get(at + 1)?,
        user_id: r.try_get(at + 2)?,
        name: r.try_get(at + 3)?,
        status: DeviceStatus::parse(&status),
        trusted_device: r.try_get(at + 5)?,
        expires: r.try_get(at + 6)?,
        os: r.try_get(at + 7)?,
        ip_address: r.try_get(at + 8)?,
        hostname: r.try_get(at + 9)?,
        city: r.try_get(at + 10)?,
        region: r.try_get(at + 11)?,
        country: r.try_get(at + 12)?,
        last_login: r.try_get(at + 13)?,
        device_metadata: r.try_get(at + 14)?,
        failed_auth_attempts: i64::from(attempts),
        created: r.try_get(at + 16)?,
        updated: r.try_get(at + 17)?,
        resource: stored_resource.map(|s| resource::from_stored(&s)),
    })
}

/// [`device_from_row`], or `None` when the columns are NULL (an outer join that found none).
pub fn optional_device(r: &Row, at: usize) -> Result<Option<Device>, PgError> {
    match r.try_get::<_, Option<String>>(at)? {
        Some(_) => device_from_row(r, at).map(Some),
        None => Ok(None),
    }
}
