//! Administration as use cases, shared by the command line and the admin API: what must happen
//! before the store's transaction (names and passwords checked, a password hashed, a secret
//! drawn) and what comes back once (a new client's secret, in clear). The rules are
//! [`crate::domain::admin`]'s.

use crate::clock;
use crate::domain::admin::{check_password, check_username, ClientSpec, Refusal, UserChange};
use crate::domain::model::{Client, User};
use crate::store::{NewUser, Store, StoreError, UserUpdate};

/// Hashes a password (PBKDF2, slow on purpose) on a blocking thread.
async fn hash_password(password: String) -> Result<String, StoreError> {
    tokio::task::spawn_blocking(move || crate::secrets::hash_password(&password))
        .await
        .map_err(|e| StoreError::Internal(format!("password hashing: {e}")))
}

/// Creates a user.
pub async fn create_user(
    store: &Store,
    username: &str,
    password: &str,
    is_admin: bool,
) -> Result<Result<User, Refusal>, StoreError> {
    if let Err(r) = check_username(username).and_then(|()| check_password(password)) {
        return Ok(Err(r));
    }
    let password_hash = hash_password(password.to_string()).await?;
    store
        .create_user(NewUser {
            username: username.to_string(),
            password_hash,
            is_admin,
            now: clock::now_ms(),
        })
        .await
}

/// Applies a change to a user, refusing to leave no enabled admin.
pub async fn update_user(
    store: &Store,
    id: &str,
    change: UserChange,
) -> Result<Result<User, Refusal>, StoreError> {
    if let Some(p) = &change.password {
        if let Err(r) = check_password(p) {
            return Ok(Err(r));
        }
    }
    let password_hash = match change.password {
        Some(p) => Some(hash_password(p).await?),
        None => None,
    };
    let update = UserUpdate {
        is_admin: change.is_admin,
        disabled: change.disabled,
        password_hash,
    };
    store
        .update_user(id.to_string(), update, clock::now_ms())
        .await
}

/// Creates a client; returns it with its secret in clear (confidential clients only, shown
/// once).
pub async fn create_client(
    store: &Store,
    spec: ClientSpec,
    confidential: bool,
) -> Result<Result<(Client, Option<String>), Refusal>, StoreError> {
    let secret = confidential.then(crate::secrets::new_token);
    let created = store
        .create_client(
            spec,
            // Time-ordered: the listing is oldest first, and ties within one millisecond
            // fall back to the id, which `now_v7` keeps in the order this process made them.
            uuid::Uuid::now_v7().to_string(),
            secret.as_deref().map(crate::secrets::hash_token),
            clock::now_ms(),
        )
        .await?;
    Ok(created.map(|client| (client, secret)))
}

/// Gives a confidential client a new secret (the old one stops working at once); returns it in
/// clear, once.
pub async fn rotate_client_secret(
    store: &Store,
    client_id: &str,
) -> Result<Result<String, Refusal>, StoreError> {
    let secret = crate::secrets::new_token();
    let rotated = store
        .set_client_secret(
            client_id.to_string(),
            crate::secrets::hash_token(&secret),
            clock::now_ms(),
        )
        .await?;
    Ok(rotated.map(|()| secret))
}
