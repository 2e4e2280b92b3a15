//! Administration on PostgreSQL: browser sessions, users, clients and devices. The same
//! answers, refusals, audit events and orderings as SQLite's (`store::sqlite::{admin,
//! devices}` and `db::{users,clients,devices,sessions,audit}`); the rules are
//! [`crate::domain::admin`]'s.
//!
//! Changes that check an invariant across rows (never leave no enabled administrator, a
//! client's owner exists and may grant its scopes) run SERIALIZABLE: two concurrent demotions
//! of the two last administrators cannot both commit, the loser runs again
//! ([`super::transaction`]) and is refused. A change to a device locks its row (`FOR UPDATE`)
//! at READ COMMITTED. Every change to users, clients or devices moves its kind's change counter
//! in its own transaction ([`coordination::bump_changes`]), so other instances drop what they
//! cache within one read of the counters, and this instance's stamp after the commit.

use tokio_postgres::types::ToSql;

use super::admin_sql::{self as sql, DEVICE_COLUMNS, DEVICE_COLUMN_COUNT, USER_COLUMNS};
use super::rows::{self, CLIENT_COLUMNS};
use super::store::PgStore;
use super::{coordination, transaction, IsolationLevel, PgError};
use crate::domain::admin::{self, ClientChange, ClientSpec, Refusal};
use crate::domain::model::{Actor, Client, Device, DeviceFilter, DeviceStatus, Session, User};
use crate::protocol::jwt::Algorithm;
use crate::protocol::resource;
use crate::store::{
    DeviceRefused, DeviceUpdate, DevicesOf, NewSession, NewUser, StoreError, UserUpdate,
};

/// The refusal of a change that would leave no enabled administrator.
fn last_admin() -> Refusal {
    Refusal::Conflict("this is the last enabled administrator".into())
}

impl PgStore {
    // Browser sessions. Nothing above the store caches them: no stamp to move.

    /// The live session with this id hash, if its user is still enabled: one statement.
    pub(crate) async fn session(
        &self,
        id_hash: Vec<u8>,
        now: i64,
    ) -> Result<Option<Session>, StoreError> {
        let conn = self.conn().await?;
        let found = async {
            let stmt = conn
                .prepare_cached(&format!(
                    "SELECT s.csrf_token, s.expires_at, {} FROM sessions s \
                     JOIN users u ON u.id = s.user_id \
                     WHERE s.id_hash = $1 AND s.expires_at > $2 AND NOT u.disabled",
                    rows::prefixed("u", USER_COLUMNS)
                ))
                .await?;
            match conn.query_opt(&stmt, &[&id_hash, &now]).await? {
                Some(r) => Ok::<_, PgError>(Some((
                    r.try_get::<_, String>(0)?,
                    r.try_get::<_, i64>(1)?,
                    sql::user_from_row(&r, 2)?,
                ))),
                None => Ok(None),
            }
        }
        .await?;
        Ok(found.map(|(csrf_token, expires_at, user)| Session {
            id_hash,
            user,
            csrf_token,
            expires_at,
        }))
    }

    pub(crate) async fn create_session(&self, s: NewSession) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(
                "INSERT INTO sessions (id_hash, user_id, csrf_token, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await
            .map_err(PgError::from)?;
        conn.execute(
            &stmt,
            &[&s.id_hash, &s.user_id, &s.csrf_token, &s.now, &s.expires_at],
        )
        .await
        .map_err(PgError::from)?;
        Ok(())
    }

    pub(crate) async fn end_session(&self, id_hash: Vec<u8>) -> Result<(), StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached("DELETE FROM sessions WHERE id_hash = $1")
            .await
            .map_err(PgError::from)?;
        conn.execute(&stmt, &[&id_hash])
            .await
            .map_err(PgError::from)?;
        Ok(())
    }

    // Users.

    pub(crate) async fn user(&self, id: String) -> Result<Option<User>, StoreError> {
        let conn = self.conn().await?;
        Ok(sql::find_user(&conn, &id).await?)
    }

    pub(crate) async fn user_by_name(&self, username: String) -> Result<Option<User>, StoreError> {
        let conn = self.conn().await?;
        Ok(sql::find_user_by_name(&conn, &username).await?)
    }

    /// A page of users by name (as SQLite's NOCASE orders them: ASCII letters folded, then
    /// bytewise), with the total count, both from one statement (one snapshot).
    pub(crate) async fn users(
        &self,
        offset: u32,
        limit: u32,
    ) -> Result<(Vec<User>, u64), StoreError> {
        let conn = self.conn().await?;
        let page = async {
            let stmt = conn
                .prepare_cached(&format!(
                    "SELECT t.n, {} FROM (SELECT count(*) AS n FROM users) t \
                     LEFT JOIN LATERAL (SELECT {USER_COLUMNS} FROM users \
                         ORDER BY ascii_fold(username) COLLATE \"C\", id \
                         LIMIT $1 OFFSET $2) u ON TRUE \
                     ORDER BY ascii_fold(u.username) COLLATE \"C\", u.id",
                    rows::prefixed("u", USER_COLUMNS)
                ))
                .await?;
            let found = conn
                .query(&stmt, &[&i64::from(limit), &i64::from(offset)])
                .await?;
            let mut total = 0i64;
            let mut users = Vec::with_capacity(found.len());
            for r in &found {
                total = r.try_get(0)?;
                if r.try_get::<_, Option<String>>(1)?.is_some() {
                    users.push(sql::user_from_row(r, 1)?);
                }
            }
            Ok::<_, PgError>((users, total.max(0) as u64))
        };
        Ok(page.await?)
    }

    pub(crate) async fn count_users(&self) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached("SELECT count(*) FROM users")
            .await
            .map_err(PgError::from)?;
        let n: i64 = conn
            .query_one(&stmt, &[])
            .await
            .map_err(PgError::from)?
            .get(0);
        Ok(n.max(0) as u64)
    }

    /// Creates a user; a name taken (case-insensitively, as SQLite's NOCASE) is a conflict.
    pub(crate) async fn create_user(
        &self,
        user: NewUser,
    ) -> Result<Result<User, Refusal>, StoreError> {
        let created = User {
            id: uuid::Uuid::new_v4().to_string(),
            username: user.username.clone(),
            password_hash: user.password_hash.clone(),
            is_admin: user.is_admin,
            disabled: false,
            created: user.now,
            updated: user.now,
        };
        let out = transaction(&self.pool, IsolationLevel::ReadCommitted, |tx| {
            let u = created.clone();
            Box::pin(async move {
                // ON CONFLICT on the unique index users_username: a taken name is an answer,
                // not an aborted transaction (a concurrent insert of the same name is waited
                // for, then found taken).
                let stmt = tx
                    .prepare_cached(&format!(
                        "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (ascii_fold(username)) DO NOTHING"
                    ))
                    .await?;
                let inserted = match tx
                    .execute(
                        &stmt,
                        &[
                            &u.id,
                            &u.username,
                            &u.password_hash,
                            &u.is_admin,
                            &u.disabled,
                            &u.created,
                            &u.updated,
                        ],
                    )
                    .await
                {
                    Ok(n) => n == 1,
                    Err(e) if super::is_unique_violation(&e) => false,
                    Err(e) => return Err(e.into()),
                };
                if !inserted {
                    return Ok(Err(Refusal::Conflict(format!(
                        "a user named {:?} already exists",
                        u.username
                    ))));
                }
                coordination::bump_changes(tx, "users").await?;
                Ok(Ok(u))
            })
        })
        .await?;
        if out.is_ok() {
            self.changed();
        }
        Ok(out)
    }

    /// Applies a change to a user, refusing to leave no enabled admin (SERIALIZABLE: two
    /// concurrent demotions of the last two cannot both pass). A new password or a disabled
    /// account signs every browser of the user out.
    pub(crate) async fn update_user(
        &self,
        id: String,
        update: UserUpdate,
        now: i64,
    ) -> Result<Result<User, Refusal>, StoreError> {
        let out = transaction(&self.pool, IsolationLevel::Serializable, |tx| {
            let (id, change) = (id.clone(), update.clone());
            Box::pin(async move {
                let Some(before) = sql::find_user(tx, &id).await? else {
                    return Ok(Err(Refusal::NotFound("no such user".into())));
                };
                let mut user = before.clone();
                user.is_admin = change.is_admin.unwrap_or(user.is_admin);
                user.disabled = change.disabled.unwrap_or(user.disabled);
                if let Some(hash) = &change.password_hash {
                    user.password_hash = hash.clone();
                }
                if admin::removes_an_admin(&before, Some(&user))
                    && sql::count_active_admins(tx).await? <= 1
                {
                    return Ok(Err(last_admin()));
                }
                user.updated = now;
                let stmt = tx
                    .prepare_cached(
                        "UPDATE users SET is_admin = $2, disabled = $3, password_hash = $4, \
                         updated = $5 WHERE id = $1",
                    )
                    .await?;
                tx.execute(
                    &stmt,
                    &[
                        &user.id,
                        &user.is_admin,
                        &user.disabled,
                        &user.password_hash,
                        &user.updated,
                    ],
                )
                .await?;
                if change.password_hash.is_some() || user.disabled {
                    let stmt = tx
                        .prepare_cached("DELETE FROM sessions WHERE user_id = $1")
                        .await?;
                    tx.execute(&stmt, &[&user.id]).await?;
                }
                coordination::bump_changes(tx, "users").await?;
                Ok(Ok(user))
            })
        })
        .await?;
        if out.is_ok() {
            self.changed();
        }
        Ok(out)
    }

    /// Deletes a user, refusing to delete the last enabled admin (SERIALIZABLE). Their
    /// devices, tokens, sessions and the clients they own go with them (the schema's cascades).
    pub(crate) async fn delete_user(&self, id: String) -> Result<Result<(), Refusal>, StoreError> {
        let out = transaction(&self.pool, IsolationLevel::Serializable, |tx| {
            let id = id.clone();
            Box::pin(async move {
                let Some(user) = sql::find_user(tx, &id).await? else {
                    return Ok(Err(Refusal::NotFound("no such user".into())));
                };
                if admin::removes_an_admin(&user, None) && sql::count_active_admins(tx).await? <= 1
                {
                    return Ok(Err(last_admin()));
                }
                let stmt = tx.prepare_cached("DELETE FROM users WHERE id = $1").await?;
                tx.execute(&stmt, &[&id]).await?;
                // The cascades may take owned clients and devices with the user.
                for kind in ["users", "clients", "devices"] {
                    coordination::bump_changes(tx, kind).await?;
                }
                Ok(Ok(()))
            })
        })
        .await?;
        if out.is_ok() {
            self.changed();
        }
        Ok(out)
    }

    // Clients.

    pub(crate) async fn client(&self, client_id: String) -> Result<Option<Client>, StoreError> {
        let conn = self.conn().await?;
        Ok(rows::find_client(&conn, &client_id).await?)
    }

    /// Every client, oldest first (ties by id).
    pub(crate) async fn clients(&self) -> Result<Vec<Client>, StoreError> {
        let conn = self.conn().await?;
        let all = async {
            let stmt = conn
                .prepare_cached(&format!(
                    "SELECT {CLIENT_COLUMNS} FROM oauth_clients ORDER BY created, client_id"
                ))
                .await?;
            conn.query(&stmt, &[])
                .await?
                .iter()
                .map(|r| rows::client_from_row(r, 0))
                .collect::<Result<Vec<_>, PgError>>()
        };
        Ok(all.await?)
    }

    /// Creates a client from `spec`, checked in the transaction that stores it (so the owner
    /// it checks is the owner it stores), with this id and secret hash.
    pub(crate) async fn create_client(
        &self,
        spec: ClientSpec,
        client_id: String,
        secret_hash: Option<Vec<u8>>,
        now: i64,
    ) -> Result<Result<Client, Refusal>, StoreError> {
        let out = transaction(&self.pool, IsolationLevel::Serializable, |tx| {
            let (spec, client_id, secret_hash) =
                (spec.clone(), client_id.clone(), secret_hash.clone());
            Box::pin(async move {
                let owner = match &spec.owner_user_id {
                    Some(id) => sql::find_user(tx, id).await?,
                    None => None,
                };
                let confidential = secret_hash.is_some();
                let checked =
                    match admin::check_client(&spec, confidential, |_| Ok::<_, PgError>(owner))? {
                        Ok(c) => c,
                        Err(r) => return Ok(Err(r)),
                    };
                let mut client = Client {
                    client_id,
                    name: String::new(),
                    secret_hash,
                    allowed_grants: Vec::new(),
                    allowed_scopes: String::new(),
                    owner_user_id: None,
                    signing_algorithm: None,
                    audience: None,
                    allowed_resources: Vec::new(),
                    created: now,
                    updated: now,
                };
                checked.apply_to(&spec, &mut client);
                let stmt = tx
                    .prepare_cached(&format!(
                        "INSERT INTO oauth_clients ({CLIENT_COLUMNS}) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
                    ))
                    .await?;
                tx.execute(
                    &stmt,
                    &[
                        &client.client_id,
                        &client.name,
                        &client.secret_hash,
                        &client.allowed_grants.join(" "),
                        &client.allowed_scopes,
                        &client.owner_user_id,
                        &client.created,
                        &client.updated,
                        &client.signing_algorithm.map(Algorithm::as_str),
                        &client.audience,
                        &resource::to_stored(&client.allowed_resources),
                    ],
                )
                .await?;
                coordination::bump_changes(tx, "clients").await?;
                Ok(Ok(client))
            })
        })
        .await?;
        if out.is_ok() {
            self.changed();
        }
        Ok(out)
    }

    /// Updates a client: the stored spec with `change` applied, checked as a whole.
    pub(crate) async fn update_client(
        &self,
        client_id: String,
        change: ClientChange,
        now: i64,
    ) -> Result<Result<Client, Refusal>, StoreError> {
        let out = transaction(&self.pool, IsolationLevel::Serializable, |tx| {
            let (client_id, change) = (client_id.clone(), change.clone());
            Box::pin(async move {
                let Some(mut client) = rows::find_client(tx, &client_id).await? else {
                    return Ok(Err(Refusal::NotFound("no such client".into())));
                };
                let mut spec = ClientSpec::of(&client);
                change.apply(&mut spec);
                let owner = match &spec.owner_user_id {
                    Some(id) => sql::find_user(tx, id).await?,
                    None => None,
                };
                let confidential = client.is_confidential();
                let checked =
                    match admin::check_client(&spec, confidential, |_| Ok::<_, PgError>(owner))? {
                        Ok(c) => c,
                        Err(r) => return Ok(Err(r)),
                    };
                checked.apply_to(&spec, &mut client);
                client.updated = now;
                let stmt = tx
                    .prepare_cached(
                        "UPDATE oauth_clients SET name = $2, allowed_grants = $3, \
                         allowed_scopes = $4, owner_user_id = $5, updated = $6, \
                         signing_algorithm = $7, audience = $8, allowed_resources = $9 \
                         WHERE client_id = $1",
                    )
                    .await?;
                tx.execute(
                    &stmt,
                    &[
                        &client.client_id,
                        &client.name,
                        &client.allowed_grants.join(" "),
                        &client.allowed_scopes,
                        &client.owner_user_id,
                        &client.updated,
                        &client.signing_algorithm.map(Algorithm::as_str),
                        &client.audience,
                        &resource::to_stored(&client.allowed_resources),
                    ],
                )
                .await?;
                coordination::bump_changes(tx, "clients").await?;
                Ok(Ok(client))
            })
        })
        .await?;
        if out.is_ok() {
            self.changed();
        }
        Ok(out)
    }

    /// Deletes a client with its devices, their authorizations and refresh tokens (the
    /// schema's cascades), recording who did it. Returns the deleted client.
    pub(crate) async fn delete_client(
        &self,
        client_id: String,
        actor: Actor,
        now: i64,
    ) -> Result<Result<Client, Refusal>, StoreError> {
        let out = transaction(&self.pool, IsolationLevel::Serializable, |tx| {
            let (client_id, actor) = (client_id.clone(), actor.clone());
            Box::pin(async move {
                let Some(client) = rows::find_client(tx, &client_id).await? else {
                    return Ok(Err(Refusal::NotFound(format!("no client {client_id:?}"))));
                };
                let stmt = tx
                    .prepare_cached("DELETE FROM oauth_clients WHERE client_id = $1")
                    .await?;
                tx.execute(&stmt, &[&client_id]).await?;
                sql::record_audit(
                    tx,
                    now,
                    actor.user_id.as_deref(),
                    "client.delete",
                    &client_id,
                    actor.ip_address.as_deref(),
                    &serde_json::json!({}),
                )
                .await?;
                coordination::bump_changes(tx, "clients").await?;
                coordination::bump_changes(tx, "devices").await?;
                Ok(Ok(client))
            })
        })
        .await?;
        if out.is_ok() {
            self.changed();
        }
        Ok(out)
    }

    /// Replaces a confidential client's secret hash (the old secret stops working at once).
    pub(crate) async fn set_client_secret(
        &self,
        client_id: String,
        secret_hash: Vec<u8>,
        now: i64,
    ) -> Result<Result<(), Refusal>, StoreError> {
        let out = transaction(&self.pool, IsolationLevel::ReadCommitted, |tx| {
            let (client_id, secret_hash) = (client_id.clone(), secret_hash.clone());
            Box::pin(async move {
                let stmt = tx
                    .prepare_cached(
                        "SELECT secret_hash IS NOT NULL FROM oauth_clients \
                         WHERE client_id = $1 FOR UPDATE",
                    )
                    .await?;
                let Some(row) = tx.query_opt(&stmt, &[&client_id]).await? else {
                    return Ok(Err(Refusal::NotFound(format!("no client {client_id:?}"))));
                };
                if !row.try_get::<_, bool>(0)? {
                    return Ok(Err(Refusal::Conflict(
                        "a public client has no secret to rotate".into(),
                    )));
                }
                let stmt = tx
                    .prepare_cached(
                        "UPDATE oauth_clients SET secret_hash = $2, updated = $3 \
                         WHERE client_id = $1",
                    )
                    .await?;
                tx.execute(&stmt, &[&client_id, &secret_hash, &now]).await?;
                coordination::bump_changes(tx, "clients").await?;
                Ok(Ok(()))
            })
        })
        .await?;
        if out.is_ok() {
            self.changed();
        }
        Ok(out)
    }

    // Devices.

    /// A device that `owner` may manage (`None`: any); someone else's is not found.
    pub(crate) async fn device(
        &self,
        id: String,
        owner: Option<String>,
    ) -> Result<Option<Device>, StoreError> {
        let conn = self.conn().await?;
        Ok(sql::find_managed(&conn, &id, owner.as_deref(), false).await?)
    }

    /// A page of devices matching `filter`, newest first (ties by id), and the total count,
    /// from one statement. Pending devices nobody has claimed are never listed.
    pub(crate) async fn devices(
        &self,
        filter: DeviceFilter,
        offset: u32,
        limit: u32,
    ) -> Result<(Vec<Device>, u64), StoreError> {
        let mut clauses = vec!["user_id IS NOT NULL".to_string()];
        let mut args: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut add = |clause: &str, value: Box<dyn ToSql + Sync + Send>| {
            args.push(value);
            clauses.push(format!("{clause} ${}", args.len()));
        };
        if let Some(u) = filter.user_id {
            add("user_id =", Box::new(u));
        }
        if let Some(s) = filter.status {
            add("status =", Box::new(s.as_str()));
        }
        if let Some(t) = filter.trusted_device {
            add("trusted_device =", Box::new(t));
        }
        if let Some(c) = filter.client_id {
            add("client_id =", Box::new(c));
        }
        let clause = clauses.join(" AND ");
        let n = args.len();
        args.push(Box::new(i64::from(limit)));
        args.push(Box::new(i64::from(offset)));
        // The page's order is that of the partial index devices_claimed (schema.sql).
        let query = format!(
            "SELECT t.n, {} FROM (SELECT count(*) AS n FROM devices WHERE {clause}) t \
             LEFT JOIN LATERAL (SELECT {DEVICE_COLUMNS} FROM devices WHERE {clause} \
                 ORDER BY created DESC, id LIMIT ${} OFFSET ${}) d ON TRUE \
             ORDER BY d.created DESC, d.id",
            rows::prefixed("d", DEVICE_COLUMNS),
            n + 1,
            n + 2
        );
        let conn = self.conn().await?;
        let page = async {
            let stmt = conn.prepare_cached(&query).await?;
            let params: Vec<&(dyn ToSql + Sync)> = args
                .iter()
                .map(|a| a.as_ref() as &(dyn ToSql + Sync))
                .collect();
            let found = conn.query(&stmt, &params).await?;
            let mut total = 0i64;
            let mut devices = Vec::with_capacity(found.len());
            for r in &found {
                total = r.try_get(0)?;
                if r.try_get::<_, Option<String>>(1)?.is_some() {
                    devices.push(sql::device_from_row(r, 1)?);
                }
            }
            Ok::<_, PgError>((devices, total.max(0) as u64))
        };
        Ok(page.await?)
    }

    /// A user's devices, newest first, with the name of each of their clients: one statement.
    pub(crate) async fn devices_of(&self, user_id: String) -> Result<DevicesOf, StoreError> {
        let conn = self.conn().await?;
        let all = async {
            let stmt = conn
                .prepare_cached(&format!(
                    "SELECT {}, c.name FROM devices d \
                     LEFT JOIN oauth_clients c ON c.client_id = d.client_id \
                     WHERE d.user_id = $1 ORDER BY d.created DESC, d.id",
                    rows::prefixed("d", DEVICE_COLUMNS)
                ))
                .await?;
            let mut devices = Vec::new();
            let mut client_names = std::collections::HashMap::new();
            for r in conn.query(&stmt, &[&user_id]).await? {
                let device = sql::device_from_row(&r, 0)?;
                let name: Option<String> = r.try_get(DEVICE_COLUMN_COUNT)?;
                client_names.entry(device.client_id.clone()).or_insert(name);
                devices.push(device);
            }
            Ok::<_, PgError>(DevicesOf {
                devices,
                client_names,
            })
        };
        Ok(all.await?)
    }

    /// Renames a device, sets its metadata, and locks or unlocks it (audited), in one
    /// transaction. A pending device cannot be locked or unlocked: its code can be denied
    /// instead.
    pub(crate) async fn update_device(
        &self,
        update: DeviceUpdate,
    ) -> Result<Result<Device, DeviceRefused>, StoreError> {
        let out = transaction(&self.pool, IsolationLevel::ReadCommitted, |tx| {
            let u = update.clone();
            Box::pin(async move {
                let Some(device) = sql::find_managed(tx, &u.id, u.owner.as_deref(), true).await?
                else {
                    return Ok(Err(DeviceRefused::NotFound));
                };
                if device.status == DeviceStatus::Pending && u.locked.is_some() {
                    return Ok(Err(DeviceRefused::Pending));
                }
                if let Some(name) = &u.name {
                    let name = name.as_deref().filter(|s| !s.is_empty());
                    let stmt = tx
                        .prepare_cached("UPDATE devices SET name = $2, updated = $3 WHERE id = $1")
                        .await?;
                    tx.execute(&stmt, &[&device.id, &name, &u.now]).await?;
                }
                if let Some(meta) = &u.metadata {
                    let stmt = tx
                        .prepare_cached(
                            "UPDATE devices SET device_metadata = $2, updated = $3 WHERE id = $1",
                        )
                        .await?;
                    tx.execute(&stmt, &[&device.id, meta, &u.now]).await?;
                }
                if let Some(locked) = u.locked {
                    lock_audited(tx, &device, locked, &u.actor, u.now).await?;
                }
                let Some(after) = sql::find_managed(tx, &device.id, None, false).await? else {
                    return Ok(Err(DeviceRefused::NotFound));
                };
                coordination::bump_changes(tx, "devices").await?;
                Ok(Ok(after))
            })
        })
        .await?;
        if out.is_ok() {
            self.changed();
        }
        Ok(out)
    }

    /// Locks or unlocks a device (audited). While locked, every refresh fails and its access
    /// tokens introspect as inactive; unlocking restores them.
    pub(crate) async fn set_device_locked(
        &self,
        id: String,
        owner: Option<String>,
        locked: bool,
        actor: Actor,
        now: i64,
    ) -> Result<Option<Device>, StoreError> {
        let out = transaction(&self.pool, IsolationLevel::ReadCommitted, |tx| {
            let (id, owner, actor) = (id.clone(), owner.clone(), actor.clone());
            Box::pin(async move {
                let Some(device) = sql::find_managed(tx, &id, owner.as_deref(), true).await? else {
                    return Ok(None);
                };
                lock_audited(tx, &device, locked, &actor, now).await?;
                let after = sql::find_managed(tx, &device.id, None, false).await?;
                coordination::bump_changes(tx, "devices").await?;
                Ok(after)
            })
        })
        .await?;
        if out.is_some() {
            self.changed();
        }
        Ok(out)
    }

    /// Removes a device: its refresh tokens are deleted with it, and its access tokens stop
    /// introspecting as active at once. False if there was no such device for `owner`.
    pub(crate) async fn remove_device(
        &self,
        id: String,
        owner: Option<String>,
        actor: Actor,
        now: i64,
    ) -> Result<bool, StoreError> {
        let out = transaction(&self.pool, IsolationLevel::ReadCommitted, |tx| {
            let (id, owner, actor) = (id.clone(), owner.clone(), actor.clone());
            Box::pin(async move {
                let stmt = tx
                    .prepare_cached(
                        "DELETE FROM devices WHERE id = $1 AND ($2::text IS NULL OR user_id = $2) \
                         RETURNING client_id, user_id",
                    )
                    .await?;
                let Some(gone) = tx.query_opt(&stmt, &[&id, &owner]).await? else {
                    return Ok(false);
                };
                let client_id: String = gone.try_get(0)?;
                let user_id: Option<String> = gone.try_get(1)?;
                sql::record_audit(
                    tx,
                    now,
                    actor.user_id.as_deref(),
                    "device.remove",
                    &id,
                    actor.ip_address.as_deref(),
                    &serde_json::json!({ "client_id": client_id, "user_id": user_id }),
                )
                .await?;
                coordination::bump_changes(tx, "devices").await?;
                Ok(true)
            })
        })
        .await?;
        if out {
            self.changed();
        }
        Ok(out)
    }
}

/// Locks or unlocks `device` and records who did it (`device.lock` / `device.unlock`), as
/// SQLite's `devices::set_locked` does.
async fn lock_audited(
    tx: &super::Transaction<'_>,
    device: &Device,
    locked: bool,
    actor: &Actor,
    now: i64,
) -> Result<(), PgError> {
    sql::set_locked(tx, &device.id, locked, now).await?;
    sql::record_audit(
        tx,
        now,
        actor.user_id.as_deref(),
        if locked {
            "device.lock"
        } else {
            "device.unlock"
        },
        &device.id,
        actor.ip_address.as_deref(),
        &serde_json::json!({ "client_id": device.client_id }),
    )
    .await
}
