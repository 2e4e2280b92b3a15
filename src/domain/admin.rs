//! The rules of administration, shared by the command line and the admin API, and by every
//! storage backend that stores what they decide: names and passwords within bounds, grants
//! known, `client_credentials` only for confidential clients, an owned client's scopes
//! grantable by its owner, and never losing the last enabled administrator.

use crate::domain::model::{Client, User};
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
/// scopes and resources (in the order given, without repeats). `find_user` reads the owner, if
/// the spec names one: the storage backend calls this inside the transaction that stores the
/// client, so the owner it checks is the owner it stores.
pub fn check_client<E>(
    spec: &ClientSpec,
    confidential: bool,
    find_user: impl FnOnce(&str) -> Result<Option<User>, E>,
) -> Result<Result<CheckedClient, Refusal>, E> {
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
        let Some(user) = find_user(owner)? else {
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
    Ok(Ok(CheckedClient {
        grants,
        scopes,
        resources,
    }))
}

/// A change to a client; `None` leaves a part as it is (`Some(None)` puts an optional part back
/// to the server's default).
#[derive(Debug, Clone, Default)]
pub struct ClientChange {
    /// A new name.
    pub name: Option<String>,
    /// New grant type URIs (empty: device_code and refresh_token).
    pub grants: Option<Vec<String>>,
    /// New space-separated scopes.
    pub scopes: Option<String>,
    /// A new owner, or none.
    pub owner_user_id: Option<Option<String>>,
    /// A new algorithm, or the server's default.
    pub signing_algorithm: Option<Option<Algorithm>>,
    /// A new default audience, or the server's default.
    pub audience: Option<Option<String>>,
    /// New resource indicators.
    pub resources: Option<Vec<String>>,
}

impl ClientChange {
    /// Applies the change to `spec`.
    pub fn apply(&self, spec: &mut ClientSpec) {
        if let Some(n) = &self.name {
            spec.name = n.clone();
        }
        if let Some(g) = &self.grants {
            spec.grants = g.clone();
        }
        if let Some(s) = &self.scopes {
            spec.scopes = s.clone();
        }
        if let Some(o) = &self.owner_user_id {
            spec.owner_user_id = o.clone();
        }
        if let Some(a) = self.signing_algorithm {
            spec.signing_algorithm = a;
        }
        if let Some(a) = &self.audience {
            spec.audience = a.clone();
        }
        if let Some(r) = &self.resources {
            spec.resources = r.clone();
        }
    }
}

impl ClientSpec {
    /// The settable parts of a stored client.
    pub fn of(client: &Client) -> ClientSpec {
        ClientSpec {
            name: client.name.clone(),
            grants: client.allowed_grants.clone(),
            scopes: client.allowed_scopes.clone(),
            owner_user_id: client.owner_user_id.clone(),
            signing_algorithm: client.signing_algorithm,
            audience: client.audience.clone(),
            resources: client.allowed_resources.clone(),
        }
    }
}

/// A client spec that passed [`check_client`], in canonical form.
#[derive(Debug, Clone)]
pub struct CheckedClient {
    /// Grant type URIs, each once, in the order given.
    pub grants: Vec<String>,
    /// The allowed scopes.
    pub scopes: Scope,
    /// Resource indicators, each once, in the order given.
    pub resources: Vec<String>,
}

impl CheckedClient {
    /// Writes the checked spec into `client` (the name trimmed).
    pub fn apply_to(self, spec: &ClientSpec, client: &mut Client) {
        client.name = spec.name.trim().to_string();
        client.allowed_grants = self.grants;
        client.allowed_scopes = self.scopes.to_string();
        client.owner_user_id = spec.owner_user_id.clone();
        client.signing_algorithm = spec.signing_algorithm;
        client.audience = spec.audience.clone();
        client.allowed_resources = self.resources;
    }
}

/// Whether changing `before` into `after` (`None`: deleting it) takes an enabled administrator
/// away: refused when it is the last one.
pub fn removes_an_admin(before: &User, after: Option<&User>) -> bool {
    let active = |u: &User| u.is_admin && !u.disabled;
    active(before) && !after.is_some_and(active)
}
