//! The client of a grant, authenticated inside the grant's own transaction (one trip per
//! request on the token endpoint's hot paths), and the active key read in the same trip.

use std::sync::Arc;

use rusqlite::Connection;

use super::db::{clients, signing_keys, DbError};
use crate::domain::model::{Client, ClientCredentials};
use crate::domain::rules;
use crate::protocol::error::OAuthError;
use crate::protocol::jwt::Algorithm;
use crate::store::{ActiveKey, Caller, ClientAuth};

/// Authenticates `auth`'s caller and checks it may use `auth.grant`. Answers the client and
/// whether it was read here (not known already).
pub(super) fn authenticate(
    conn: &Connection,
    auth: &ClientAuth,
) -> Result<Result<(Arc<Client>, bool), OAuthError>, DbError> {
    let (client, fresh) = match &auth.caller {
        Caller::Known(c) => (c.clone(), false),
        Caller::Presented(creds) => match verify_client(conn, creds)? {
            Ok(c) => (Arc::new(c), true),
            Err(e) => return Ok(Err(e)),
        },
        Caller::RefreshTokenOwner(token) => {
            let found = match super::tokens::refresh_token_client(conn, token)? {
                Some(client_id) => clients::find(conn, &client_id)?,
                None => None,
            };
            match rules::refresh_token_owner(found) {
                Ok(c) => (Arc::new(c), true),
                Err(e) => return Ok(Err(e)),
            }
        }
    };
    if let Err(e) = rules::check_grant(&client, auth.grant) {
        return Ok(Err(e));
    }
    Ok(Ok((client, fresh)))
}

/// Reads the client `creds` name and checks the credentials (secrets compared in constant
/// time, as hashes).
pub(super) fn verify_client(
    conn: &Connection,
    creds: &ClientCredentials,
) -> Result<Result<Client, OAuthError>, DbError> {
    let found = if creds.client_id.len() > 200 {
        None
    } else {
        clients::find(conn, &creds.client_id)?
    };
    Ok(rules::authenticate(found, creds))
}

/// Which key is active for `client`'s algorithm (given the server's `default`): read in the
/// trip of a grant that ends in a token, so the signer cache is confirmed without a trip of
/// its own.
pub(super) fn active_key(
    conn: &Connection,
    client: &Client,
    default: Algorithm,
) -> Result<ActiveKey, DbError> {
    let algorithm = client.algorithm(default);
    Ok(ActiveKey {
        algorithm,
        kid: signing_keys::active_kid(conn, algorithm)?,
    })
}
