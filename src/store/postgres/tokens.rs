//! Tokens and keys on PostgreSQL: client authentication, the client-credentials and refresh
//! grants (RFC 6749 §4.4, §6), revocation (RFC 7009), introspection (RFC 7662), bearer tokens
//! of the management API, and the signing keys. The rules are SQLite's
//! (src/store/sqlite/tokens.rs and db/signing_keys.rs); what differs is how several instances
//! meet:
//!
//! - A refresh reads the token, its device and user, the client and the active keys in one
//!   trip (statements pipelined on one connection), decides with the shared rules, and then
//!   rotates with one statement whose `UPDATE ... WHERE used_at IS NULL AND revoked_at IS NULL`
//!   is the gate: of two refreshes of one token at once, on any instances, one passes it; the
//!   other finds the row used and takes the careful path, a transaction that locks the row
//!   (`FOR UPDATE`) and decides again, which sees the token used and revokes its family as
//!   reuse (RFC 9700 §4.14.2).
//! - The first key of an algorithm is generated outside any transaction and stored with
//!   `ON CONFLICT DO NOTHING` on the unique partial index `signing_keys_active`: of instances
//!   asking at once, one stores its key and the others read the winner's.
//! - Key changes move the `keys` change counter in their transaction, so other instances drop
//!   their signers within one read of the counters.

use std::sync::Arc;

use deadpool_postgres::GenericClient;
use tokio_postgres::Row;

use super::admin_sql::record_audit as audit;
use super::rows::{
    self, device_from_row, optional_user as user_from_row, prefixed, DEVICE_COLUMNS, DEVICE_WIDTH,
    USER_COLUMNS,
};
use super::store::PgStore;
use super::tokens_keys::{self as keys, KeyRow};
use super::{coordination, IsolationLevel, PgError};
use crate::domain::model::*;
use crate::domain::rules::{self, effective_scope};
use crate::protocol::error::{ErrorCode, OAuthError};
use crate::protocol::jwt::{self, AccessClaims, Algorithm, PublicKey, SigningKey, Verified};
use crate::protocol::scope::Scope;
use crate::sealing::Sealer;
use crate::secrets;
use crate::store::*;

/// The `refresh_tokens` columns [`token_from_row`] reads, in its order.
const TOKEN_COLUMNS: &str = "device_id, family, scope, created_at, expires_at, used_at, revoked_at";
const TOKEN_WIDTH: usize = 7;

fn token_from_row(r: &Row, at: usize) -> Result<RefreshToken, PgError> {
    Ok(RefreshToken {
        device_id: r.try_get(at)?,
        family: r.try_get(at + 1)?,
        scope: r.try_get(at + 2)?,
        created_at: r.try_get(at + 3)?,
        expires_at: r.try_get(at + 4)?,
        used_at: r.try_get(at + 5)?,
        revoked_at: r.try_get(at + 6)?,
    })
}

/// A refresh token with its device and the device's user (if it has one).
struct Held {
    token: RefreshToken,
    device: Device,
    user: Option<User>,
}

impl Held {
    fn holder(&self, now: i64) -> Option<User> {
        holder(&self.device, self.user.as_ref(), now)
    }
}

/// [`rules::device_holder`] with the user read in the same statement as the device.
fn holder(device: &Device, user: Option<&User>, now: i64) -> Option<User> {
    rules::device_holder::<std::convert::Infallible>(device, now, |id| {
        Ok(user.filter(|u| u.id == id).cloned())
    })
    .unwrap_or_else(|never| match never {})
}

/// The refresh token with key `hash`, its device and user; `lock` takes the token's row lock
/// (`FOR UPDATE OF r`) until the transaction ends.
async fn find_held<C: GenericClient>(
    client: &C,
    hash: &[u8],
    lock: bool,
) -> Result<Option<Held>, PgError> {
    let sql = format!(
        "SELECT {}, {}, {} FROM refresh_tokens r JOIN devices d ON d.id = r.device_id \
         LEFT JOIN users u ON u.id = d.user_id WHERE r.token_hash = $1{}",
        prefixed("r", TOKEN_COLUMNS),
        prefixed("d", DEVICE_COLUMNS),
        prefixed("u", USER_COLUMNS),
        if lock { " FOR UPDATE OF r" } else { "" }
    );
    let stmt = client.prepare_cached(&sql).await?;
    match client.query_opt(&stmt, &[&hash]).await? {
        Some(r) => Ok(Some(Held {
            token: token_from_row(&r, 0)?,
            device: device_from_row(&r, TOKEN_WIDTH)?,
            user: user_from_row(&r, TOKEN_WIDTH + DEVICE_WIDTH)?,
        })),
        None => Ok(None),
    }
}

/// A device and its user, by the device's id.
async fn find_device<C: GenericClient>(
    client: &C,
    device_id: &str,
) -> Result<Option<(Device, Option<User>)>, PgError> {
    let sql = format!(
        "SELECT {}, {} FROM devices d LEFT JOIN users u ON u.id = d.user_id WHERE d.id = $1",
        prefixed("d", DEVICE_COLUMNS),
        prefixed("u", USER_COLUMNS),
    );
    let stmt = client.prepare_cached(&sql).await?;
    match client.query_opt(&stmt, &[&device_id]).await? {
        Some(r) => Ok(Some((
            device_from_row(&r, 0)?,
            user_from_row(&r, DEVICE_WIDTH)?,
        ))),
        None => Ok(None),
    }
}

/// Whether the access token `jti` was revoked.
async fn access_token_revoked<C: GenericClient>(client: &C, jti: &str) -> Result<bool, PgError> {
    let stmt = client
        .prepare_cached("SELECT 1 FROM revoked_access_tokens WHERE jti = $1")
        .await?;
    Ok(client.query_opt(&stmt, &[&jti]).await?.is_some())
}

/// Whether the device's grant was revoked (see SQLite's `refresh_tokens::grant_revoked`).
async fn grant_revoked<C: GenericClient>(client: &C, device_id: &str) -> Result<bool, PgError> {
    let stmt = client
        .prepare_cached(
            "SELECT 1 FROM refresh_tokens WHERE device_id = $1 AND revoked_at IS NOT NULL \
             LIMIT 1",
        )
        .await?;
    Ok(client.query_opt(&stmt, &[&device_id]).await?.is_some())
}

/// Whether a client with this id exists.
async fn client_exists<C: GenericClient>(client: &C, client_id: &str) -> Result<bool, PgError> {
    let stmt = client
        .prepare_cached("SELECT 1 FROM oauth_clients WHERE client_id = $1")
        .await?;
    Ok(client.query_opt(&stmt, &[&client_id]).await?.is_some())
}

/// Who a verified, unexpired access token acts for while it is live: `Some(user)` (`None`
/// inside for a client's own token), or `None` when it is not live: revoked, its grant revoked,
/// its device gone or its holder no longer allowed, or (`check_client`, introspection) a
/// client's token whose client is gone. Its statements are sent together: one trip.
async fn access_holder<C: GenericClient>(
    client: &C,
    claims: &AccessClaims,
    now: i64,
    check_client: bool,
) -> Result<Option<Option<User>>, PgError> {
    match &claims.device_id {
        Some(device_id) => {
            let (revoked, found, grant) = tokio::try_join!(
                access_token_revoked(client, &claims.jti),
                find_device(client, device_id),
                grant_revoked(client, device_id),
            )?;
            if revoked {
                return Ok(None);
            }
            let Some((device, user)) = found else {
                return Ok(None);
            };
            let Some(user) = holder(&device, user.as_ref(), now) else {
                return Ok(None);
            };
            if grant {
                return Ok(None);
            }
            Ok(Some(Some(user)))
        }
        None if check_client => {
            let (revoked, exists) = tokio::try_join!(
                access_token_revoked(client, &claims.jti),
                client_exists(client, &claims.client_id),
            )?;
            Ok((!revoked && exists).then_some(None))
        }
        None => Ok((!access_token_revoked(client, &claims.jti).await?).then_some(None)),
    }
}

/// Revokes every live token of `device_id`'s `family`; returns how many.
async fn revoke_family<C: GenericClient>(
    client: &C,
    device_id: &str,
    family: &str,
    now: i64,
) -> Result<u64, PgError> {
    let stmt = client
        .prepare_cached(
            "UPDATE refresh_tokens SET revoked_at = $3 \
             WHERE device_id = $1 AND family = $2 AND revoked_at IS NULL",
        )
        .await?;
    Ok(client.execute(&stmt, &[&device_id, &family, &now]).await?)
}

/// What a refresh does, decided from what was read (SQLite's `tokens::refresh`, in its order).
enum Step {
    /// Refused, nothing written.
    Refuse(OAuthError),
    /// A used token presented again: revoke its family.
    Reuse {
        device_id: String,
        family: String,
        actor: Option<String>,
    },
    /// Rotate: mark the token used, store a new one of its family with scope `kept`, and
    /// answer `grant` (whose refresh token is the new one), if the device and user are still
    /// as `seen`.
    Rotate {
        grant: Grant,
        kept: String,
        seen: Seen,
    },
}

/// The device and user a rotation was decided on: the rotation's statement stores nothing if
/// either changed since (a lock or a disabled user between the read and the write).
struct Seen {
    device_updated: i64,
    user_id: String,
    user_updated: i64,
    user_is_admin: bool,
}

fn refuse(code: ErrorCode, description: &'static str) -> Step {
    Step::Refuse(OAuthError::new(code, description))
}

/// Decides a refresh of `r` by `client` on what was read (RFC 6749 §6, RFC 9700 §4.14).
fn decide(r: &Refresh, client: &Client, found: Option<Held>) -> Step {
    let now = r.now;
    let Some(held) = found else {
        return refuse(ErrorCode::InvalidGrant, "unknown refresh token");
    };
    if held.device.client_id != client.client_id {
        return refuse(
            ErrorCode::InvalidGrant,
            "the refresh token was issued to another client",
        );
    }
    if held.token.revoked_at.is_some() {
        return refuse(ErrorCode::InvalidGrant, "the refresh token was revoked");
    }
    if held.token.used_at.is_some() {
        return Step::Reuse {
            device_id: held.device.id,
            family: held.token.family,
            actor: held.device.user_id,
        };
    }
    if held.token.expires_at <= now {
        return refuse(ErrorCode::InvalidGrant, "the refresh token has expired");
    }
    let Some(user) = held.holder(now) else {
        return refuse(
            ErrorCode::InvalidGrant,
            "the device is locked, removed or expired, or its user is disabled",
        );
    };
    let original = Scope::parse(&held.token.scope).unwrap_or_default();
    let asked = match &r.scope {
        Some(a) if !a.is_subset(&original) => {
            // RFC 6749 §6: the new scope must not include any scope not originally granted.
            return refuse(
                ErrorCode::InvalidScope,
                "scope exceeds the one originally granted",
            );
        }
        Some(a) => a.clone(),
        None => original.clone(),
    };
    let scope = effective_scope(&asked, &client.allowed_scopes, user.is_admin).to_string();
    // RFC 6749 §6: a narrower `scope` narrows only this access token; the new refresh token
    // keeps the grant's scope, less what the client or the user may no longer have.
    let kept = effective_scope(&original, &client.allowed_scopes, user.is_admin).to_string();
    let audience = match rules::audience(client, &r.target, held.device.resource.as_deref()) {
        Ok(aud) => aud,
        Err(e) => return Step::Refuse(e),
    };
    let seen = Seen {
        device_updated: held.device.updated,
        user_id: user.id.clone(),
        user_updated: user.updated,
        user_is_admin: user.is_admin,
    };
    Step::Rotate {
        seen,
        grant: Grant {
            user_id: user.id,
            device_id: held.device.id,
            scope,
            audience,
            refresh_token: secrets::new_ordered_token(),
        },
        kept,
    }
}

/// The rotation's writes in one statement: records the device's login if the device and its
/// user are still as `seen` (the user's row share-locked, the device's updated: a concurrent
/// lock or disable is waited for and then seen), then marks the token used if it is still
/// unused and unrevoked (the gate between simultaneous refreshes: a second waits for the
/// first's row lock and then finds the row used), and stores the new token of its family.
/// True when both passed; false sends the refresh to the careful path, which reads again.
async fn rotate<C: GenericClient>(
    client: &C,
    hash: &[u8],
    grant: &Grant,
    kept: &str,
    seen: &Seen,
    r: &Refresh,
) -> Result<bool, PgError> {
    let stmt = client
        .prepare_cached(
            "WITH u AS (SELECT id FROM users WHERE id = $6 AND updated = $7 AND NOT disabled \
                 AND is_admin = $8 FOR SHARE), \
             login AS (UPDATE devices SET status = 'active', last_login = $2, updated = $2 \
                 WHERE id = $9 AND updated = $10 AND status IN ('verified', 'active') \
                 AND EXISTS (SELECT 1 FROM u) RETURNING id), \
             used AS (UPDATE refresh_tokens SET used_at = $2 \
                 WHERE token_hash = $1 AND used_at IS NULL AND revoked_at IS NULL \
                 AND EXISTS (SELECT 1 FROM login) RETURNING device_id, family), \
             fresh AS (INSERT INTO refresh_tokens \
                 (token_hash, device_id, family, scope, created_at, expires_at) \
                 SELECT $3, device_id, family, $4, $2, $5 FROM used) \
             SELECT count(*) FROM used",
        )
        .await?;
    let new_hash = secrets::token_key(&grant.refresh_token);
    let n: i64 = client
        .query_one(
            &stmt,
            &[
                &hash,
                &r.now,
                &new_hash,
                &kept,
                &r.refresh_expires_at,
                &seen.user_id,
                &seen.user_updated,
                &seen.user_is_admin,
                &grant.device_id,
                &seen.device_updated,
            ],
        )
        .await?
        .get(0);
    Ok(n == 1)
}

/// A refresh's outcome when it was not a plain rotation: the token read again under its row
/// lock, decided again, and acted on (SQLite's transaction, step for step).
async fn refresh_locked(
    tx: &super::Transaction<'_>,
    r: &Refresh,
    client: &Client,
    hash: &[u8],
) -> Result<(Result<Grant, OAuthError>, Option<String>), PgError> {
    let found = find_held(tx, hash, true).await?;
    match decide(r, client, found) {
        Step::Refuse(e) => Ok((Err(e), None)),
        Step::Reuse {
            device_id,
            family,
            actor,
        } => {
            let revoked = revoke_family(tx, &device_id, &family, r.now).await?;
            audit(
                tx,
                r.now,
                actor.as_deref(),
                "refresh_token.reuse",
                &device_id,
                r.ip_address.as_deref(),
                &serde_json::json!({ "family": family, "revoked": revoked }),
            )
            .await?;
            Ok((
                Err(OAuthError::new(
                    ErrorCode::InvalidGrant,
                    "the refresh token was already used; every token of this sign-in is now \
                     revoked",
                )),
                Some(device_id),
            ))
        }
        Step::Rotate { grant, kept, seen } => {
            if !rotate(tx, hash, &grant, &kept, &seen, r).await? {
                return Ok((
                    Err(OAuthError::new(
                        ErrorCode::InvalidGrant,
                        "the refresh token was already used",
                    )),
                    None,
                ));
            }
            Ok((Ok(grant), None))
        }
    }
}

/// The active key of `client`'s algorithm among `kids` (all active keys, read in the trip).
fn active_key_of(client: &Client, default: Algorithm, kids: &[(Algorithm, String)]) -> ActiveKey {
    let algorithm = client.algorithm(default);
    ActiveKey {
        algorithm,
        kid: kids
            .iter()
            .find(|(a, _)| *a == algorithm)
            .map(|(_, k)| k.clone()),
    }
}

/// Reads the active keys when `wanted`, else nothing (beside other statements of a trip).
async fn kids_if<C: GenericClient>(
    client: &C,
    wanted: bool,
) -> Result<Vec<(Algorithm, String)>, PgError> {
    if wanted {
        keys::active_kids(client).await
    } else {
        Ok(Vec::new())
    }
}

/// A refresh token could not contain a dot; a JWT has two. A token with a dot is looked up as
/// a refresh token only after it failed to verify as an access token.
fn may_be_refresh_token(token: &str) -> bool {
    !token.contains('.')
}

/// Generates a key off the async threads (an RSA key takes up to a few hundred ms).
async fn generate(algorithm: Algorithm) -> Result<(SigningKey, Vec<u8>), PgError> {
    tokio::task::spawn_blocking(move || SigningKey::generate(algorithm))
        .await
        .map_err(|e| PgError::Internal(format!("key generation failed: {e}")))
}

impl PgStore {
    pub(crate) async fn client_grant(
        &self,
        auth: ClientAuth,
    ) -> Result<Result<ClientRead, OAuthError>, StoreError> {
        let conn = self.conn().await?;
        // The client and the active keys in one trip: the client's algorithm is known only
        // once it is read, so every algorithm's active kid (at most three rows) comes along.
        let (authenticated, kids) = tokio::try_join!(
            rows::authenticate(&conn, &auth),
            kids_if(&conn, auth.sign_default.is_some()),
        )?;
        let (client, fresh) = match authenticated {
            Ok(read) => read,
            Err(e) => return Ok(Err(e)),
        };
        let key = auth
            .sign_default
            .map(|default| active_key_of(&client, default, &kids));
        Ok(Ok(ClientRead { client, fresh, key }))
    }

    pub(crate) async fn refresh(
        &self,
        r: Refresh,
    ) -> Result<Result<Refreshed, OAuthError>, StoreError> {
        let hash = secrets::token_key(&r.token);
        let conn = self.conn().await?;
        // One trip: the client, the token with its device and user, the active keys.
        let (authenticated, found, kids) = tokio::try_join!(
            rows::authenticate(&conn, &r.auth),
            find_held(&conn, &hash, false),
            kids_if(&conn, r.auth.sign_default.is_some()),
        )?;
        let (client, _) = match authenticated {
            Ok(read) => read,
            Err(e) => return Ok(Err(e)),
        };
        let key = |grant: &Result<Grant, OAuthError>| match (grant, r.auth.sign_default) {
            (Ok(_), Some(default)) => Some(active_key_of(&client, default, &kids)),
            _ => None,
        };
        // The common case, a rotation, is one more statement; a refusal none.
        match decide(&r, &client, found) {
            Step::Refuse(e) => {
                return Ok(Ok(Refreshed {
                    client,
                    grant: Err(e),
                    key: None,
                }))
            }
            // Decided again under the row lock, below.
            Step::Reuse { .. } => {}
            Step::Rotate { grant, kept, seen } => {
                if rotate(&conn, &hash, &grant, &kept, &seen, &r).await? {
                    let grant = Ok(grant);
                    let key = key(&grant);
                    return Ok(Ok(Refreshed { client, grant, key }));
                }
                // Another refresh of this token (or a revocation, or the device's removal)
                // passed first: decided again under the row lock, below.
            }
        }
        drop(conn);
        let shared = Arc::new((r.clone(), hash));
        let locked = client.clone();
        let (grant, reused) = super::transaction(&self.pool, IsolationLevel::ReadCommitted, {
            move |tx| {
                let (shared, client) = (shared.clone(), locked.clone());
                Box::pin(async move { refresh_locked(tx, &shared.0, &client, &shared.1).await })
            }
        })
        .await?;
        if let Some(device_id) = reused {
            tracing::warn!(%device_id, "refresh token reused: family revoked");
        }
        let key = key(&grant);
        Ok(Ok(Refreshed { client, grant, key }))
    }

    pub(crate) async fn authenticate_client(
        &self,
        creds: ClientCredentials,
    ) -> Result<Result<Client, OAuthError>, StoreError> {
        let conn = self.conn().await?;
        Ok(rows::verify_client(&conn, &creds).await?)
    }

    pub(crate) async fn revoke(&self, r: Revocation) -> Result<(), StoreError> {
        let r = Arc::new(r);
        super::transaction(&self.pool, IsolationLevel::ReadCommitted, move |tx| {
            let r = r.clone();
            Box::pin(async move { revoke_in(tx, &r).await })
        })
        .await?;
        Ok(())
    }

    pub(crate) async fn introspect(
        &self,
        i: Introspect,
    ) -> Result<Result<Introspection, OAuthError>, StoreError> {
        let conn = self.conn().await?;
        let token = i.token.as_deref();
        let hash = token.map(secrets::token_key);
        // One trip: the client, the published keys, and (for what cannot be a JWT) the
        // refresh token with its device and user.
        let (verified_client, published, held) = tokio::try_join!(
            rows::verify_client(&conn, &i.creds),
            async {
                match token {
                    Some(_) => keys::published(&conn, i.now, i.grace_ms).await,
                    None => Ok(Vec::new()),
                }
            },
            async {
                match (&hash, token) {
                    (Some(h), Some(t)) if may_be_refresh_token(t) => {
                        find_held(&conn, h, false).await.map(Some)
                    }
                    _ => Ok(None),
                }
            },
        )?;
        let client = match verified_client {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        if !client.is_confidential() {
            return Ok(Err(OAuthError::new(
                ErrorCode::InvalidClient,
                "introspection requires a confidential client's credentials",
            )));
        }
        let (Some(token), Some(hash)) = (token, hash) else {
            return Ok(Err(OAuthError::new(
                ErrorCode::InvalidRequest,
                "missing parameter `token`",
            )));
        };
        if let Some(claims) = i.verified.verify(token, &published) {
            if claims.exp * 1000 <= i.now {
                return Ok(Ok(Introspection::Inactive));
            }
            return Ok(Ok(
                match access_holder(&conn, &claims, i.now, true).await? {
                    Some(user) => Introspection::Access { claims, user },
                    None => Introspection::Inactive,
                },
            ));
        }
        let held = match held {
            Some(held) => held,
            None => find_held(&conn, &hash, false).await?,
        };
        let Some(held) = held else {
            return Ok(Ok(Introspection::Inactive));
        };
        let t = &held.token;
        if t.used_at.is_some() || t.revoked_at.is_some() || t.expires_at <= i.now {
            return Ok(Ok(Introspection::Inactive));
        }
        let Some(user) = held.holder(i.now) else {
            return Ok(Ok(Introspection::Inactive));
        };
        Ok(Ok(Introspection::Refresh {
            token: held.token,
            device: held.device,
            user,
        }))
    }

    pub(crate) async fn bearer(
        &self,
        token: String,
        verified: Arc<Verified>,
        grace_ms: i64,
        now: i64,
    ) -> Result<Option<Bearer>, StoreError> {
        let conn = self.conn().await?;
        let published = keys::published(&conn, now, grace_ms).await?;
        let Some(claims) = verified.verify(&token, &published) else {
            return Ok(None);
        };
        if claims.exp * 1000 <= now {
            return Ok(None);
        }
        Ok(access_holder(&conn, &claims, now, false)
            .await?
            .map(|user| (claims, user)))
    }

    pub(crate) async fn published_keys(
        &self,
        now: i64,
        grace_ms: i64,
    ) -> Result<Vec<PublicKey>, StoreError> {
        let conn = self.conn().await?;
        Ok(keys::published(&conn, now, grace_ms).await?)
    }

    pub(crate) async fn keys(&self) -> Result<Vec<KeyInfo>, StoreError> {
        let conn = self.conn().await?;
        Ok(keys::list(&conn).await?)
    }

    pub(crate) async fn check_sealing(&self, sealer: Arc<Sealer>) -> Result<usize, StoreError> {
        let conn = self.conn().await?;
        Ok(keys::check_sealing(&conn, &sealer).await?)
    }

    pub(crate) async fn active_key(
        &self,
        sealer: Arc<Sealer>,
        algorithm: Algorithm,
    ) -> Result<Option<SigningKey>, StoreError> {
        let conn = self.conn().await?;
        Ok(keys::active(&conn, &sealer, algorithm).await?)
    }

    pub(crate) async fn signing_key(
        &self,
        sealer: Arc<Sealer>,
        algorithm: Algorithm,
        cached: Option<String>,
        now: i64,
    ) -> Result<Option<SigningKey>, StoreError> {
        {
            let conn = self.conn().await?;
            if let Some(kid) = &cached {
                if rows::active_kid(&conn, algorithm).await?.as_deref() == Some(kid) {
                    return Ok(None);
                }
            }
            if let Some(key) = keys::active(&conn, &sealer, algorithm).await? {
                return Ok(Some(key));
            }
        }
        // None yet: generate one outside any transaction (RSA takes up to ~400 ms), then
        // store it unless another instance stored one meanwhile.
        let (fresh, pkcs8) = generate(algorithm).await?;
        let row = Arc::new(KeyRow::new(&sealer, &fresh, &pkcs8));
        let stored = super::transaction(&self.pool, IsolationLevel::ReadCommitted, {
            let (row, sealer) = (row.clone(), sealer.clone());
            move |tx| {
                let (row, sealer) = (row.clone(), sealer.clone());
                Box::pin(async move {
                    // A server started with the wrong secret must not put a key sealed with it
                    // beside the others (see SQLite's `active_or_create`).
                    keys::check_sealing(tx, &sealer).await?;
                    if keys::insert_first(tx, &row, now).await? {
                        coordination::bump_changes(tx, "keys").await?;
                        return Ok(true);
                    }
                    Ok(false)
                })
            }
        })
        .await?;
        if stored {
            self.changed();
            tracing::info!(kid = %fresh.kid, algorithm = algorithm.as_str(), "created a signing key");
            return Ok(Some(fresh));
        }
        // Another instance's key won: read it.
        let conn = self.conn().await?;
        match keys::active(&conn, &sealer, algorithm).await? {
            Some(key) => Ok(Some(key)),
            None => Err(StoreError::Busy(
                "the signing key stored by another instance was retired at once; try again".into(),
            )),
        }
    }

    pub(crate) async fn rotate_keys(
        &self,
        sealer: Arc<Sealer>,
        only: Option<Algorithm>,
        default: Algorithm,
        now: i64,
    ) -> Result<Vec<SigningKey>, StoreError> {
        let mut algorithms = vec![only.unwrap_or(default)];
        if only.is_none() {
            let conn = self.conn().await?;
            for alg in keys::active_algorithms(&conn).await? {
                if !algorithms.contains(&alg) {
                    algorithms.push(alg);
                }
            }
        }
        // New keys are generated before the transaction, once, however often it runs.
        let mut fresh = Vec::with_capacity(algorithms.len());
        for alg in algorithms {
            fresh.push(generate(alg).await?);
        }
        let rows: Arc<Vec<KeyRow>> = Arc::new(
            fresh
                .iter()
                .map(|(k, pkcs8)| KeyRow::new(&sealer, k, pkcs8))
                .collect(),
        );
        super::transaction(&self.pool, IsolationLevel::Serializable, move |tx| {
            let (rows, sealer) = (rows.clone(), sealer.clone());
            Box::pin(async move {
                // The new keys are sealed like the others: never one under a wrong secret.
                keys::check_sealing(tx, &sealer).await?;
                for row in rows.iter() {
                    keys::retire_active(tx, row.algorithm, now).await?;
                    // A rotation within the same millisecond must still order after the old key.
                    keys::insert(tx, row, now + 1, Some(now + 1)).await?;
                }
                coordination::bump_changes(tx, "keys").await?;
                Ok(())
            })
        })
        .await?;
        self.changed();
        Ok(fresh.into_iter().map(|(k, _)| k).collect())
    }

    pub(crate) async fn import_key(
        &self,
        sealer: Arc<Sealer>,
        key: Arc<SigningKey>,
        pkcs8: Vec<u8>,
        standby: bool,
        now: i64,
    ) -> Result<Imported, StoreError> {
        let row = Arc::new(KeyRow::new(&sealer, &key, &pkcs8));
        let outcome = super::transaction(&self.pool, IsolationLevel::Serializable, move |tx| {
            let (row, sealer) = (row.clone(), sealer.clone());
            Box::pin(async move {
                let exists = tx
                    .query_opt("SELECT 1 FROM signing_keys WHERE kid = $1", &[&row.kid])
                    .await?
                    .is_some();
                if exists {
                    return Ok(Imported::Duplicate);
                }
                keys::check_sealing(tx, &sealer).await?;
                let outcome = if standby {
                    keys::insert(tx, &row, now, None).await?;
                    Imported::Standby
                } else {
                    let retired = keys::retire_active(tx, row.algorithm, now).await?;
                    keys::insert(tx, &row, now, Some(now + 1)).await?;
                    Imported::Active { retired }
                };
                coordination::bump_changes(tx, "keys").await?;
                Ok(outcome)
            })
        })
        .await?;
        if outcome != Imported::Duplicate {
            self.changed();
        }
        Ok(outcome)
    }

    pub(crate) async fn activate_key(
        &self,
        kid: String,
        now: i64,
    ) -> Result<Activation, StoreError> {
        let kid: Arc<str> = kid.into();
        let outcome = super::transaction(&self.pool, IsolationLevel::Serializable, move |tx| {
            let kid = kid.clone();
            Box::pin(async move {
                let row = tx
                    .query_opt(
                        "SELECT algorithm, activated, retired FROM signing_keys WHERE kid = $1",
                        &[&&*kid],
                    )
                    .await?;
                let Some(row) = row else {
                    return Ok(Activation::NotFound);
                };
                let (alg, activated, retired): (String, Option<i64>, Option<i64>) =
                    (row.get(0), row.get(1), row.get(2));
                Ok(match (activated, retired) {
                    (_, Some(_)) => Activation::Retired,
                    (Some(_), None) => Activation::AlreadyActive,
                    (None, None) => {
                        let algorithm = Algorithm::parse(&alg).ok_or_else(|| {
                            PgError::Refused(format!("unknown signing algorithm {alg:?}"))
                        })?;
                        let retired = keys::retire_active(tx, algorithm, now).await?;
                        tx.execute(
                            "UPDATE signing_keys SET activated = $2 WHERE kid = $1",
                            &[&&*kid, &(now + 1)],
                        )
                        .await?;
                        coordination::bump_changes(tx, "keys").await?;
                        Activation::Activated {
                            algorithm: alg,
                            retired,
                        }
                    }
                })
            })
        })
        .await?;
        if matches!(outcome, Activation::Activated { .. }) {
            self.changed();
        }
        Ok(outcome)
    }

    pub(crate) async fn revoke_key(&self, kid: String) -> Result<bool, StoreError> {
        let kid: Arc<str> = kid.into();
        let deleted = super::transaction(&self.pool, IsolationLevel::ReadCommitted, move |tx| {
            let kid = kid.clone();
            Box::pin(async move {
                let n = tx
                    .execute("DELETE FROM signing_keys WHERE kid = $1", &[&&*kid])
                    .await?;
                if n == 1 {
                    coordination::bump_changes(tx, "keys").await?;
                }
                Ok(n == 1)
            })
        })
        .await?;
        if deleted {
            self.changed();
        }
        Ok(deleted)
    }

    pub(crate) async fn reseal_keys(&self, sealer: Arc<Sealer>) -> Result<Resealed, StoreError> {
        if !sealer.is_configured() {
            return Err(StoreError::Refused(
                "no sealing secret is configured (keys.sealing_secrets_file)".into(),
            ));
        }
        let done = super::transaction(&self.pool, IsolationLevel::Serializable, move |tx| {
            let sealer = sealer.clone();
            Box::pin(async move {
                let mut done = Resealed::default();
                for (kid, alg, stored) in keys::all_private(tx).await? {
                    // Every key is opened (and parsed) first: a damaged row is reported.
                    keys::load(&sealer, &kid, &alg, &stored)?;
                    if sealer.sealed_with_first(&stored) {
                        done.unchanged.push(kid);
                        continue;
                    }
                    let pkcs8 = sealer
                        .open(&kid, &alg, &stored)
                        .map_err(|e| PgError::Refused(e.to_string()))?;
                    tx.execute(
                        "UPDATE signing_keys SET private_key = $1 WHERE kid = $2",
                        &[&sealer.seal(&kid, &alg, &pkcs8), &kid],
                    )
                    .await?;
                    done.resealed.push(kid);
                }
                if !done.resealed.is_empty() {
                    coordination::bump_changes(tx, "keys").await?;
                }
                Ok(done)
            })
        })
        .await?;
        if !done.resealed.is_empty() {
            self.changed();
        }
        Ok(done)
    }
}

/// RFC 7009 §2.1 in one transaction (SQLite's `tokens::revoke`): a refresh token's whole family,
/// or an access token by `jti` until it would have expired, when issued to the client revoking.
/// Unknown tokens and other clients' tokens are left alone: the answer is the same either way.
/// The published keys are read only if the token is tried as an access token.
async fn revoke_in(tx: &super::Transaction<'_>, r: &Revocation) -> Result<(), PgError> {
    let (token, client_id, now) = (r.token.as_str(), r.client_id.as_str(), r.now);
    let try_refresh_first = r.hint.as_deref() != Some("access_token");
    for attempt in 0..2 {
        let as_refresh = (attempt == 0) == try_refresh_first;
        if as_refresh {
            if let Some(held) = find_held(tx, &secrets::token_key(token), true).await? {
                if held.device.client_id == client_id {
                    let n = revoke_family(tx, &held.device.id, &held.token.family, now).await?;
                    audit(
                        tx,
                        now,
                        held.device.user_id.as_deref(),
                        "refresh_token.revoke",
                        &held.device.id,
                        None,
                        &serde_json::json!({ "family": held.token.family, "revoked": n }),
                    )
                    .await?;
                }
                break;
            }
        } else {
            let published = keys::published(tx, now, r.grace_ms).await?;
            if let Some(claims) = jwt::verify(token, &published) {
                if claims.client_id == client_id && claims.exp * 1000 > now {
                    let expires_at = claims.exp * 1000;
                    tx.execute(
                        "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ($1, $2) \
                         ON CONFLICT (jti) DO NOTHING",
                        &[&claims.jti, &expires_at],
                    )
                    .await?;
                }
                break;
            }
        }
    }
    Ok(())
}
