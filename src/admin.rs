//! Administration of users and clients, shared by the command line and the admin API so both
//! enforce the same rules: names and passwords within bounds, grants known, `client_credentials`
//! only for confidential clients, an owned client's scopes grantable by its owner, and never
//! losing the last enabled administrator.

use rusqlite::Connection;

use crate::clock;
use crate::db::{self, clients, users, DbError};
use crate::domain::model::{Actor, Client, User};
use crate::protocol::grant;
use crate::protocol::jwt::Algorithm;
use crate::protocol::resource;
use crate::protocol::scope::{self, Scope};

/// Why an administrative change was refused, for the caller to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A field is malformed or out of bounds.
    #[error("{field}: {message}")]
    Invalid {
        /// The field at fault.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The change conflicts with existing data.
    #[error("{0}")]
    Conflict(String),
    /// No such user or client.
    #[error("{0}")]
    NotFound(String),
}

fn invalid(field: &'static str, message: impl Into<String>) -> Refusal {
    Refusal::Invalid {
        field,
        message: message.into(),
    }
}

/// Checks a username: 1 to 64 characters, no whitespace, control or invisible characters.
pub fn check_username(name: &str) -> Result<(), Refusal> {
    if let Some(why) = crate::text::hidden_refusal("a username", name) {
        return Err(invalid("username", why));
    }
    if name.is_empty()
        || name.chars().count() > 64
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "username",
            "must be 1 to 64 characters without spaces",
        ));
    }
    Ok(())
}

/// Checks a password: 8 to 1024 characters (NIST SP 800-63B's minimum; no composition rules).
pub fn check_password(password: &str) -> Result<(), Refusal> {
    if password.chars().count() < 8 || password.len() > 1024 {
        return Err(invalid("password", "must be 8 to 1024 characters"));
    }
    Ok(())
}

/// Creates a user. The password is hashed here (PBKDF2, slow on purpose): call this off the
/// async threads.
pub fn create_user(
    conn: &Connection,
    username: &str,
    password: &str,
    is_admin: bool,
) -> Result<Result<User, Refusal>, DbError> {
    if let Err(r) = check_username(username).and_then(|()| check_password(password)) {
        return Ok(Err(r));
    }
    let hash = crate::secrets::hash_password(password);
    match users::insert(conn, username, &hash, is_admin, clock::now_ms()) {
        Ok(u) => Ok(Ok(u)),
        Err(DbError::Sqlite(e)) if db::is_unique_violation(&e) => Ok(Err(Refusal::Conflict(
            format!("a user named {username:?} already exists"),
        ))),
        Err(e) => Err(e),
    }
}

/// A change to a user; `None` leaves a field as it is.
#[derive(Debug, Default, Clone)]
pub struct UserChange {
    /// Grant or remove admin.
    pub is_admin: Option<bool>,
    /// Disable (tokens of their devices stop at the next refresh or introspection) or enable.
    pub disabled: Option<bool>,
    /// A new password.
    pub password: Option<String>,
}

/// Applies a change to a user in one transaction, refusing to leave no enabled admin.
pub fn update_user(
    conn: &mut Connection,
    id: &str,
    change: &UserChange,
) -> Result<Result<User, Refusal>, DbError> {
    if let Some(p) = &change.password {
        if let Err(r) = check_password(p) {
            return Ok(Err(r));
        }
    }
    let new_hash = change
        .password
        .as_deref()
        .map(crate::secrets::hash_password);
    let tx = db::write_tx(conn)?;
    let Some(mut user) = users::find_by_id(&tx, id)? else {
        return Ok(Err(Refusal::NotFound("no such user".into())));
    };
    let was_active_admin = user.is_admin && !user.disabled;
    let stays_active_admin = |u: &User| u.is_admin && !u.disabled;
    user.is_admin = change.is_admin.unwrap_or(user.is_admin);
    user.disabled = change.disabled.unwrap_or(user.disabled);
    if let Some(hash) = new_hash {
        user.password_hash = hash;
    }
    let demoted = was_active_admin && !stays_active_admin(&user);
    if demoted && users::count_active_admins(&tx)? <= 1 {
        return Ok(Err(Refusal::Conflict(
            "this is the last enabled administrator".into(),
        )));
    }
    user.updated = clock::now_ms();
    users::update(&tx, &user, user.updated)?;
    // A new password or a disabled account signs every browser out.
    if change.password.is_some() || user.disabled {
        crate::db::sessions::delete_for_user(&tx, &user.id)?;
    }
    tx.commit()?;
    Ok(Ok(user))
}

/// Deletes a user, refusing to delete the last enabled admin.
pub fn delete_user(conn: &mut Connection, id: &str) -> Result<Result<(), Refusal>, DbError> {
    let tx = db::write_tx(conn)?;
    let Some(user) = users::find_by_id(&tx, id)? else {
        return Ok(Err(Refusal::NotFound("no such user".into())));
    };
    if user.is_admin && !user.disabled && users::count_active_admins(&tx)? <= 1 {
        return Ok(Err(Refusal::Conflict(
            "this is the last enabled administrator".into(),
        )));
    }
    users::delete(&tx, id)?;
    tx.commit()?;
    Ok(Ok(()))
}

/// The settable parts of a client.
#[derive(Debug, Clone, Default)]
pub struct ClientSpec {
    /// Shown on the approval page.
    pub name: String,
    /// Grant type URIs; empty means device_code and refresh_token.
    pub grants: Vec<String>,
    /// Space-separated scopes the client may request.
    pub scopes: String,
    /// The owning user, if any.
    pub owner_user_id: Option<String>,
    /// The algorithm of its tokens; `None` follows `oauth.signing_algorithm`.
    pub signing_algorithm: Option<Algorithm>,
    /// The default `aud` of its tokens; `None` follows `oauth.audience`, else the issuer.
    pub audience: Option<String>,
    /// RFC 8707 resource indicators it may ask for besides its default audience.
    pub resources: Vec<String>,
}

/// Validates a spec for a client that is (or is not) confidential; returns canonical grants,
/// scopes and resources (in the order given, without repeats).
#[allow(clippy::type_complexity)]
fn check_client(
    conn: &Connection,
    spec: &ClientSpec,
    confidential: bool,
) -> Result<Result<(Vec<String>, Scope, Vec<String>), Refusal>, DbError> {
    let name = spec.name.trim();
    if let Some(why) = crate::text::hidden_refusal("a client name", name) {
        return Ok(Err(invalid("name", why)));
    }
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Ok(Err(invalid("name", "must be 1 to 100 characters")));
    }
    let Some(scopes) = Scope::parse(&spec.scopes) else {
        return Ok(Err(invalid(
            "allowed_scopes",
            "a scope has a forbidden character",
        )));
    };
    let mut grants = if spec.grants.is_empty() {
        vec![
            grant::DEVICE_CODE.to_string(),
            grant::REFRESH_TOKEN.to_string(),
        ]
    } else {
        spec.grants.clone()
    };
    // Keep the first of each (the order is what the caller wrote), drop later repeats.
    let mut seen = std::collections::HashSet::new();
    grants.retain(|g| seen.insert(g.clone()));
    if let Some(g) = grants.iter().find(|g| !grant::ALL.contains(&g.as_str())) {
        return Ok(Err(invalid(
            "allowed_grants",
            format!("unknown grant {g:?}; known: {}", grant::ALL.join(", ")),
        )));
    }
    if grants.iter().any(|g| g == grant::CLIENT_CREDENTIALS) && !confidential {
        return Ok(Err(invalid(
            "allowed_grants",
            "client_credentials needs a confidential client",
        )));
    }
    if let Some(aud) = &spec.audience {
        if let Err(e) = resource::check_audience(aud) {
            return Ok(Err(invalid("audience", e)));
        }
    }
    if spec.resources.len() > 100 {
        return Ok(Err(invalid("allowed_resources", "at most 100 resources")));
    }
    let mut resources: Vec<String> = Vec::with_capacity(spec.resources.len());
    for r in &spec.resources {
        if let Err(e) = resource::check_uri(r) {
            return Ok(Err(invalid("allowed_resources", e)));
        }
        if !resources.contains(r) {
            resources.push(r.clone());
        }
    }
    if let Some(owner) = &spec.owner_user_id {
        let Some(user) = users::find_by_id(conn, owner)? else {
            return Ok(Err(invalid("owner_user_id", "no such user")));
        };
        // Storyden's rule: an owned client's scopes must be grantable by its owner.
        if scopes.contains(scope::ADMIN) && !user.is_admin {
            return Ok(Err(invalid(
                "allowed_scopes",
                "the owner is not an administrator and cannot grant the admin scope",
            )));
        }
    }
    Ok(Ok((grants, scopes, resources)))
}

/// Creates a client; returns it with its secret in clear (confidential clients only, shown once).
pub fn create_client(
    conn: &Connection,
    spec: &ClientSpec,
    confidential: bool,
) -> Result<Result<(Client, Option<String>), Refusal>, DbError> {
    let (grants, scopes, resources) = match check_client(conn, spec, confidential)? {
        Ok(v) => v,
        Err(r) => return Ok(Err(r)),
    };
    let secret = confidential.then(crate::secrets::new_token);
    let now = clock::now_ms();
    let client = Client {
        client_id: uuid::Uuid::new_v4().to_string(),
        name: spec.name.trim().to_string(),
        secret_hash: secret.as_deref().map(crate::secrets::hash_token),
        allowed_grants: grants,
        allowed_scopes: scopes.to_string(),
        owner_user_id: spec.owner_user_id.clone(),
        signing_algorithm: spec.signing_algorithm,
        audience: spec.audience.clone(),
        allowed_resources: resources,
        created: now,
        updated: now,
    };
    clients::insert(conn, &client)?;
    Ok(Ok((client, secret)))
}

/// Updates a client. Only future authorizations and refreshes see the change (a new signing
/// algorithm or audience applies from the next token, refreshes included); access tokens
/// already issued stay valid until they expire.
pub fn update_client(
    conn: &mut Connection,
    client_id: &str,
    change: impl FnOnce(&mut ClientSpec),
) -> Result<Result<Client, Refusal>, DbError> {
    let tx = db::write_tx(conn)?;
    let Some(mut client) = clients::find(&tx, client_id)? else {
        return Ok(Err(Refusal::NotFound("no such client".into())));
    };
    let mut spec = ClientSpec {
        name: client.name.clone(),
        grants: client.allowed_grants.clone(),
        scopes: client.allowed_scopes.clone(),
        owner_user_id: client.owner_user_id.clone(),
        signing_algorithm: client.signing_algorithm,
        audience: client.audience.clone(),
        resources: client.allowed_resources.clone(),
    };
    change(&mut spec);
    let (grants, scopes, resources) = match check_client(&tx, &spec, client.is_confidential())? {
        Ok(v) => v,
        Err(r) => return Ok(Err(r)),
    };
    client.name = spec.name.trim().to_string();
    client.allowed_grants = grants;
    client.allowed_scopes = scopes.to_string();
    client.owner_user_id = spec.owner_user_id;
    client.signing_algorithm = spec.signing_algorithm;
    client.audience = spec.audience;
    client.allowed_resources = resources;
    client.updated = clock::now_ms();
    clients::update(&tx, &client, client.updated)?;
    tx.commit()?;
    Ok(Ok(client))
}

/// Deletes a client with its devices, their authorizations and refresh tokens (the schema's
/// cascades), recording who did it. Returns the deleted client.
pub fn delete_client(
    conn: &mut Connection,
    client_id: &str,
    actor: Actor<'_>,
    now: i64,
) -> Result<Result<Client, Refusal>, DbError> {
    let tx = db::write_tx(conn)?;
    let Some(client) = clients::find(&tx, client_id)? else {
        return Ok(Err(Refusal::NotFound(format!("no client {client_id:?}"))));
    };
    clients::delete(&tx, client_id)?;
    db::audit::record(
        &tx,
        now,
        actor.user_id,
        "client.delete",
        client_id,
        actor.ip_address,
        &serde_json::json!({}),
    )?;
    tx.commit()?;
    Ok(Ok(client))
}

/// Gives a confidential client a new secret (the old one stops working at once); returns it in
/// clear, once.
pub fn rotate_client_secret(
    conn: &Connection,
    client_id: &str,
) -> Result<Result<String, Refusal>, DbError> {
    let Some(client) = clients::find(conn, client_id)? else {
        return Ok(Err(Refusal::NotFound(format!("no client {client_id:?}"))));
    };
    if !client.is_confidential() {
        return Ok(Err(Refusal::Conflict(
            "a public client has no secret to rotate".into(),
        )));
    }
    let secret = crate::secrets::new_token();
    clients::set_secret(
        conn,
        client_id,
        &crate::secrets::hash_token(&secret),
        clock::now_ms(),
    )?;
    Ok(Ok(secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn() -> Connection {
        let mut c = Connection::open_in_memory().unwrap();
        c.pragma_update(None, "foreign_keys", "ON").unwrap();
        db::migrate::migrate(&mut c, std::path::Path::new(":memory:")).unwrap();
        c
    }

    #[test]
    fn the_last_admin_stays() {
        let mut c = conn();
        let a = users::insert(&c, "root", "x", true, 0).unwrap();
        let demote = UserChange {
            is_admin: Some(false),
            ..Default::default()
        };
        assert!(matches!(
            update_user(&mut c, &a.id, &demote).unwrap(),
            Err(Refusal::Conflict(_))
        ));
        assert!(matches!(
            delete_user(&mut c, &a.id).unwrap(),
            Err(Refusal::Conflict(_))
        ));
        users::insert(&c, "root2", "x", true, 0).unwrap();
        assert!(update_user(&mut c, &a.id, &demote).unwrap().is_ok());
    }

    #[test]
    fn client_rules() {
        let c = conn();
        let user = users::insert(&c, "bob", "x", false, 0).unwrap();
        let spec = |grants: &[&str], scopes: &str, owner: Option<&str>| ClientSpec {
            name: "n".into(),
            grants: grants.iter().map(|g| g.to_string()).collect(),
            scopes: scopes.into(),
            owner_user_id: owner.map(str::to_string),
            ..Default::default()
        };
        let cc = [grant::CLIENT_CREDENTIALS];
        assert!(create_client(&c, &spec(&cc, "", None), false)
            .unwrap()
            .is_err());
        assert!(create_client(&c, &spec(&cc, "", None), true)
            .unwrap()
            .is_ok());
        assert!(create_client(&c, &spec(&["nope"], "", None), true)
            .unwrap()
            .is_err());
        let owned = spec(&[], "read admin", Some(&user.id));
        assert!(create_client(&c, &owned, false).unwrap().is_err());
        let (client, secret) = create_client(&c, &spec(&[], "b a", None), false)
            .unwrap()
            .unwrap();
        assert_eq!(client.allowed_scopes, "a b");
        assert!(secret.is_none());
        assert_eq!(client.allowed_grants.len(), 2);
    }

    #[test]
    fn client_algorithm_audience_and_resources() {
        let mut c = conn();
        let spec = ClientSpec {
            name: "api client".into(),
            signing_algorithm: Some(Algorithm::ES256),
            audience: Some("https://api.example".into()),
            resources: vec!["https://a".into(), "urn:b".into(), "https://a".into()],
            ..Default::default()
        };
        let (client, _) = create_client(&c, &spec, false).unwrap().unwrap();
        let stored = clients::find(&c, &client.client_id).unwrap().unwrap();
        assert_eq!(stored.signing_algorithm, Some(Algorithm::ES256));
        assert_eq!(stored.audience.as_deref(), Some("https://api.example"));
        assert_eq!(stored.allowed_resources, ["https://a", "urn:b"]);
        assert_eq!(stored.algorithm(Algorithm::RS256), Algorithm::ES256);
        // Back to the server's defaults.
        let updated = update_client(&mut c, &client.client_id, |s| {
            s.signing_algorithm = None;
            s.audience = None;
            s.resources.clear();
        })
        .unwrap()
        .unwrap();
        assert_eq!(updated.algorithm(Algorithm::RS256), Algorithm::RS256);
        let stored = clients::find(&c, &client.client_id).unwrap().unwrap();
        assert_eq!(
            (
                stored.signing_algorithm,
                stored.audience,
                stored.allowed_resources.len()
            ),
            (None, None, 0)
        );
        // Malformed resources and audiences are refused, naming the field.
        for (field, bad) in [
            (
                "allowed_resources",
                ClientSpec {
                    resources: vec!["no-scheme".into()],
                    ..spec.clone()
                },
            ),
            (
                "allowed_resources",
                ClientSpec {
                    resources: vec!["https://a#f".into()],
                    ..spec.clone()
                },
            ),
            (
                "audience",
                ClientSpec {
                    audience: Some("has space".into()),
                    ..spec.clone()
                },
            ),
        ] {
            match create_client(&c, &bad, false).unwrap() {
                Err(Refusal::Invalid { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
