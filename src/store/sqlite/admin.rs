//! Administration of users and clients on SQLite, each change one transaction. The rules (names,
//! passwords, grants, an owner's scopes, the last administrator) are [`crate::domain::admin`]'s;
//! names and passwords are checked, and passwords hashed, before the transaction.

use rusqlite::Connection;

use super::db::{self, clients, sessions, users, DbError};
use crate::domain::admin::{self, ClientChange, ClientSpec, Refusal};
use crate::domain::model::{Actor, Client, User};
use crate::store::{NewUser, UserUpdate};

/// Creates a user; a taken name is a conflict.
pub fn create_user(conn: &Connection, new: &NewUser) -> Result<Result<User, Refusal>, DbError> {
    match users::insert(
        conn,
        &new.username,
        &new.password_hash,
        new.is_admin,
        new.now,
    ) {
        Ok(u) => Ok(Ok(u)),
        Err(DbError::Sqlite(e)) if db::is_unique_violation(&e) => Ok(Err(Refusal::Conflict(
            format!("a user named {:?} already exists", new.username),
        ))),
        Err(e) => Err(e),
    }
}

/// Applies a change to a user in one transaction, refusing to leave no enabled admin. A new
/// password or a disabled account signs every browser of the user out.
pub fn update_user(
    conn: &mut Connection,
    id: &str,
    change: &UserUpdate,
    now: i64,
) -> Result<Result<User, Refusal>, DbError> {
    let tx = db::write_tx(conn)?;
    let Some(before) = users::find_by_id(&tx, id)? else {
        return Ok(Err(Refusal::NotFound("no such user".into())));
    };
    let mut user = before.clone();
    user.is_admin = change.is_admin.unwrap_or(user.is_admin);
    user.disabled = change.disabled.unwrap_or(user.disabled);
    if let Some(hash) = &change.password_hash {
        user.password_hash = hash.clone();
    }
    if admin::removes_an_admin(&before, Some(&user)) && users::count_active_admins(&tx)? <= 1 {
        return Ok(Err(Refusal::Conflict(
            "this is the last enabled administrator".into(),
        )));
    }
    user.updated = now;
    users::update(&tx, &user, user.updated)?;
    if change.password_hash.is_some() || user.disabled {
        sessions::delete_for_user(&tx, &user.id)?;
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
    if admin::removes_an_admin(&user, None) && users::count_active_admins(&tx)? <= 1 {
        return Ok(Err(Refusal::Conflict(
            "this is the last enabled administrator".into(),
        )));
    }
    users::delete(&tx, id)?;
    tx.commit()?;
    Ok(Ok(()))
}

/// Creates a client from `spec` (checked here, with its owner), with this id and secret hash.
pub fn create_client(
    conn: &Connection,
    spec: &ClientSpec,
    client_id: &str,
    secret_hash: Option<&[u8]>,
    now: i64,
) -> Result<Result<Client, Refusal>, DbError> {
    let confidential = secret_hash.is_some();
    let checked = match admin::check_client(spec, confidential, |id| users::find_by_id(conn, id))? {
        Ok(c) => c,
        Err(r) => return Ok(Err(r)),
    };
    let mut client = Client {
        client_id: client_id.to_string(),
        name: String::new(),
        secret_hash: secret_hash.map(<[u8]>::to_vec),
        allowed_grants: Vec::new(),
        allowed_scopes: String::new(),
        owner_user_id: None,
        signing_algorithm: None,
        audience: None,
        allowed_resources: Vec::new(),
        created: now,
        updated: now,
    };
    checked.apply_to(spec, &mut client);
    clients::insert(conn, &client)?;
    Ok(Ok(client))
}

/// Updates a client: the stored spec with `change` applied, checked as a whole.
pub fn update_client(
    conn: &mut Connection,
    client_id: &str,
    change: &ClientChange,
    now: i64,
) -> Result<Result<Client, Refusal>, DbError> {
    let tx = db::write_tx(conn)?;
    let Some(mut client) = clients::find(&tx, client_id)? else {
        return Ok(Err(Refusal::NotFound("no such client".into())));
    };
    let mut spec = ClientSpec::of(&client);
    change.apply(&mut spec);
    let confidential = client.is_confidential();
    let checked = match admin::check_client(&spec, confidential, |id| users::find_by_id(&tx, id))? {
        Ok(c) => c,
        Err(r) => return Ok(Err(r)),
    };
    checked.apply_to(&spec, &mut client);
    client.updated = now;
    clients::update(&tx, &client, client.updated)?;
    tx.commit()?;
    Ok(Ok(client))
}

/// Deletes a client with its devices, their authorizations and refresh tokens (the schema's
/// cascades), recording who did it. Returns the deleted client.
pub fn delete_client(
    conn: &mut Connection,
    client_id: &str,
    actor: &Actor,
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
        actor.user_id.as_deref(),
        "client.delete",
        client_id,
        actor.ip_address.as_deref(),
        &serde_json::json!({}),
    )?;
    tx.commit()?;
    Ok(Ok(client))
}

/// Replaces a confidential client's secret hash (the old secret stops working at once).
pub fn set_client_secret(
    conn: &Connection,
    client_id: &str,
    secret_hash: &[u8],
    now: i64,
) -> Result<Result<(), Refusal>, DbError> {
    let Some(client) = clients::find(conn, client_id)? else {
        return Ok(Err(Refusal::NotFound(format!("no client {client_id:?}"))));
    };
    if !client.is_confidential() {
        return Ok(Err(Refusal::Conflict(
            "a public client has no secret to rotate".into(),
        )));
    }
    clients::set_secret(conn, client_id, secret_hash, now)?;
    Ok(Ok(()))
}
