//! The device flow on PostgreSQL (RFC 8628 §3): starting an authorization, the read and write
//! halves of a poll, looking up, approving and denying a code, the admins' listings, and the
//! reaper's batches. The decisions are the shared ones of `domain::rules` and `protocol`; the
//! SQLite bodies (src/store/sqlite/flow.rs) are the specification.
//!
//! Several instances may run these at once on one database. What must happen once happens in
//! one conditional statement that re-checks the row it changes under its row lock (READ
//! COMMITTED re-reads a row changed meanwhile): consuming a code (one grant per code),
//! approving or denying it (one decision), evicting it. The hot paths are grouped
//! ([`super::group`]): device authorizations that arrive together share one transaction (their
//! statements pipelined, one commit), and polls that arrive together share one statement that
//! writes their poll marks and reads their codes; the exchange is a statement or two, each
//! atomic by itself (data-modifying CTEs). The rare multi-statement work (a wrong code counted
//! against a device) runs in [`super::transaction`].

use std::sync::Arc;

use deadpool_postgres::GenericClient;
use tokio_postgres::types::ToSql;

use super::flow_sql::{
    authorization_from_row, big, count, device_from_row, listing_condition, mark_from_row, seconds,
    state_condition, user_from_row, AUTH_COLUMNS, AUTH_WIDTH, DEVICE_COLUMNS, DEVICE_WIDTH,
    MARK_COLUMNS, USER_COLUMNS,
};
use super::hot::PollWork;
use super::rows::{self, client_from_row, prefixed, CLIENT_COLUMNS};
use super::store::PgStore;
use super::{coordination, IsolationLevel, PgError};
use crate::domain::model::{
    Actor, AuthorizationState, CodeProblem, Device, DeviceAuthorization, DeviceCodeCheck, Grant,
    Listing, Overview, Pending, PollOutcome, StateCounts,
};
use crate::domain::rules;
use crate::protocol::codes::UserCode;
use crate::protocol::error::{ErrorCode, OAuthError};
use crate::protocol::poll::{self, PollDecision};
use crate::protocol::scope::Scope;
use crate::secrets;
use crate::store::*;

impl PgStore {
    pub(crate) async fn start_authorization(
        &self,
        new: NewAuthorization,
    ) -> Result<Result<StartOutcome, OAuthError>, StoreError> {
        let outcome = self.groups.starts.call(new).await??;
        if let Ok(StartOutcome::Started { evicted: true, .. }) = outcome {
            // A code that was pending ended: a remembered read of it is stale.
            self.changed();
        }
        Ok(outcome)
    }

    pub(crate) async fn poll_read(
        &self,
        auth: ClientAuth,
        device_code: String,
    ) -> Result<Result<PollRead, OAuthError>, StoreError> {
        // A client already authenticated (the usual poll): only the code is read, with the
        // other polls waiting at the same moment.
        if let Caller::Known(client) = &auth.caller {
            if let Err(e) = rules::check_grant(client, auth.grant) {
                return Ok(Err(e));
            }
            let key = secrets::token_key(&device_code);
            let found = self.groups.polls.call(PollWork::Read(key)).await?;
            let (authorization, shared) = match found {
                Some((a, mark)) => (Some(a), mark),
                None => (None, None),
            };
            return Ok(Ok(PollRead {
                client: ClientRead {
                    client: client.clone(),
                    fresh: false,
                    key: None,
                },
                authorization,
                shared,
            }));
        }
        let conn = self.conn().await?;
        Ok(poll_read(&conn, &auth, &device_code).await?)
    }

    pub(crate) async fn exchange(&self, x: Exchange) -> Result<Exchanged, StoreError> {
        let conn = self.conn().await?;
        Ok(exchange(&conn, &x).await?)
    }

    pub(crate) async fn look_up_code(
        &self,
        typed: String,
        viewer: Option<String>,
        now: i64,
    ) -> Result<CodeLookup, StoreError> {
        let conn = self.conn().await?;
        let found = find_code(&conn, &typed, None).await?;
        Ok(match found.pending(now) {
            Ok(pending) => CodeLookup::Pending {
                pending,
                client_name: found.client_name,
            },
            Err(problem) => CodeLookup::Problem {
                problem,
                approved_by_viewer: viewer.and_then(|v| found.approved_by(&v)),
            },
        })
    }

    pub(crate) async fn approved_by(
        &self,
        typed: String,
        user_id: String,
    ) -> Result<Option<i64>, StoreError> {
        let conn = self.conn().await?;
        Ok(find_code(&conn, &typed, None).await?.approved_by(&user_id))
    }

    pub(crate) async fn approve(
        &self,
        approval: Approval,
    ) -> Result<Result<Device, ApprovalRefused>, StoreError> {
        let outcome = self.approve_code(&approval).await?;
        // An approval, a wrong code counted, or a device locked and its code denied.
        if matches!(
            outcome,
            Ok(_) | Err(ApprovalRefused::Wrong { .. } | ApprovalRefused::Locked)
        ) {
            self.changed();
        }
        Ok(outcome)
    }

    pub(crate) async fn deny(
        &self,
        typed: String,
        actor: Actor,
        now: i64,
    ) -> Result<Result<(), CodeProblem>, StoreError> {
        let conn = self.conn().await?;
        let denied = deny(&conn, &typed, &actor, now).await?;
        if denied.is_ok() {
            self.changed();
        }
        Ok(denied)
    }

    pub(crate) async fn deny_authorization(
        &self,
        id: String,
        actor: Actor,
        now: i64,
    ) -> Result<Option<Result<DeviceAuthorization, CodeProblem>>, StoreError> {
        let conn = self.conn().await?;
        let Some(a) = find_authorization(&conn, &id).await? else {
            return Ok(None);
        };
        let denied = deny(&conn, &a.user_code, &actor, now).await?;
        if let Err(problem) = denied {
            return Ok(Some(Err(problem)));
        }
        self.changed();
        Ok(find_authorization(&conn, &a.id).await?.map(Ok))
    }

    pub(crate) async fn authorizations(
        &self,
        state: Option<AuthorizationState>,
        client_id: Option<String>,
        now: i64,
        offset: u32,
        limit: u32,
    ) -> Result<(Vec<DeviceAuthorization>, u64), StoreError> {
        let conn = self.conn().await?;
        Ok(list(&conn, state, client_id.as_deref(), now, offset, limit).await?)
    }

    pub(crate) async fn authorizations_page(
        &self,
        listing: Listing,
        client_id: Option<String>,
        now: i64,
        page: u32,
        page_size: u32,
    ) -> Result<AuthorizationsPage, StoreError> {
        let conn = self.conn().await?;
        Ok(authorizations_page(&conn, listing, client_id.as_deref(), now, page, page_size).await?)
    }

    pub(crate) async fn write_poll_times(&self, times: Vec<PollTime>) -> Result<(), StoreError> {
        if times.is_empty() {
            return Ok(());
        }
        let conn = self.conn().await?;
        Ok(write_poll_times(&conn, &times).await?)
    }

    pub(crate) async fn count_expired_unused(&self, now: i64) -> Result<u64, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached(super::flow_sql::COUNT_EXPIRED_UNUSED)
            .await
            .map_err(PgError::from)?;
        let row = conn
            .query_one(&stmt, &[&now])
            .await
            .map_err(PgError::from)?;
        Ok(count(&row, 0)?)
    }

    pub(crate) async fn purge(
        &self,
        what: Expired,
        now: i64,
        limit: u32,
    ) -> Result<usize, StoreError> {
        let conn = self.conn().await?;
        let n = purge(&conn, what, now, limit).await?;
        if n > 0 && matches!(what, Expired::Devices | Expired::Sessions) {
            self.changed();
        }
        Ok(n)
    }

    pub(crate) async fn purge_keys(&self, now: i64, grace_ms: i64) -> Result<usize, StoreError> {
        let conn = self.conn().await?;
        let stmt = conn
            .prepare_cached("DELETE FROM signing_keys WHERE retired IS NOT NULL AND retired <= $1")
            .await
            .map_err(PgError::from)?;
        let n = conn
            .execute(&stmt, &[&now.saturating_sub(grace_ms)])
            .await
            .map_err(PgError::from)? as usize;
        if n > 0 {
            self.changed();
        }
        Ok(n)
    }

    /// [`PgStore::approve`]'s work: the named device's code checked first (a wrong one
    /// counted against it), then the approval.
    async fn approve_code(
        &self,
        approval: &Approval,
    ) -> Result<Result<Device, ApprovalRefused>, PgError> {
        let (typed, now) = (approval.typed.as_str(), approval.now);
        let ip_address = approval.ip_address.as_deref();
        // A wrong code for the named device counts against that device, which is locked after
        // oauth.max_failed_code_attempts (RFC 8628 §5.1).
        if let Some((device_id, max_failed)) = &approval.for_device {
            match self
                .check_code_for_device(*max_failed, device_id, typed, ip_address, now)
                .await?
            {
                DeviceCodeCheck::Matches => {}
                DeviceCodeCheck::NoPendingCode => return Ok(Err(ApprovalRefused::NoPendingCode)),
                DeviceCodeCheck::Wrong { remaining } => {
                    return Ok(Err(ApprovalRefused::Wrong { remaining }))
                }
                DeviceCodeCheck::Locked => return Ok(Err(ApprovalRefused::Locked)),
            }
        }
        let conn = self.pool.get().await?;
        let user_id = approval.user_id.as_str();
        let found = find_code(&conn, typed, Some(user_id)).await?;
        let pending = match found.pending(now) {
            Ok(p) => p,
            Err(problem) => return Ok(Err(ApprovalRefused::Code(problem))),
        };
        if rules::needs_admin(&pending.authorization.scope, found.approver_is_admin) {
            return Ok(Err(ApprovalRefused::Code(CodeProblem::NeedsAdmin)));
        }
        let a = &pending.authorization;
        let detail = serde_json::json!({
            "authorization_id": a.id,
            "client_id": a.client_id,
            "scope": a.scope,
            "trusted_device": approval.trusted,
        })
        .to_string();
        // The approval, the device's new owner and the audit record: one statement, so
        // either all or none; of two approvers (or an approver and a denier) on any instances,
        // the second finds the row decided under its lock and changes nothing.
        let stmt = conn
            .prepare_cached(&format!(
                "WITH ap AS (UPDATE device_authorizations \
                     SET approved_by_account_id = $2, approved_at = $3 \
                     WHERE id = $1 AND approved_at IS NULL AND denied_at IS NULL \
                     AND consumed_at IS NULL AND expires_at > $3 RETURNING device_id), \
                 dv AS (UPDATE devices SET user_id = $2, status = 'verified', \
                     trusted_device = $4, expires = $5, updated = $3 \
                     WHERE id = (SELECT device_id FROM ap) RETURNING {DEVICE_COLUMNS}), \
                 au AS (INSERT INTO audit_events (at, actor, action, target_id, ip_address, \
                     detail) SELECT $3, $2, 'device.approve', device_id, $6, $7 FROM ap), \
                 {DECIDED} AS (SELECT {NOTIFY} FROM ap) \
                 SELECT (SELECT count(*) FROM ap) + (SELECT count(*) FROM {DECIDED}) * 0, {} \
                 FROM (SELECT 1) one LEFT JOIN dv ON TRUE",
                prefixed("dv", DEVICE_COLUMNS)
            ))
            .await?;
        let row = conn
            .query_one(
                &stmt,
                &[
                    &a.id,
                    &user_id,
                    &now,
                    &approval.trusted,
                    &approval.device_expires,
                    &ip_address,
                    &detail,
                ],
            )
            .await?;
        if count(&row, 0)? == 0 {
            return Ok(Err(ApprovalRefused::Code(CodeProblem::AlreadyUsed)));
        }
        Ok(Ok(device_from_row(&row, 1)?.unwrap_or(pending.device)))
    }

    /// Checks `typed` against the live code of device `device_id`, counting a wrong one
    /// against the device (`devices.failed_auth_attempts`); at `max_failed` the device is
    /// locked and its authorization denied, in the same transaction (RFC 8628 §5.1).
    async fn check_code_for_device(
        &self,
        max_failed: u32,
        device_id: &str,
        typed: &str,
        ip_address: Option<&str>,
        now: i64,
    ) -> Result<DeviceCodeCheck, PgError> {
        let typed = UserCode::parse(typed);
        let (device_id, ip_address): (Arc<str>, Option<Arc<str>>) =
            (device_id.into(), ip_address.map(Arc::from));
        super::transaction(&self.pool, IsolationLevel::ReadCommitted, |tx| {
            let (device_id, ip_address, typed) =
                (device_id.clone(), ip_address.clone(), typed.clone());
            Box::pin(async move {
                let find = tx
                    .prepare_cached(&format!(
                        "SELECT {AUTH_COLUMNS} FROM device_authorizations WHERE device_id = $1 \
                         AND approved_at IS NULL AND denied_at IS NULL AND consumed_at IS NULL \
                         AND expires_at > $2 ORDER BY created_at DESC, id DESC LIMIT 1"
                    ))
                    .await?;
                let Some(row) = tx.query_opt(&find, &[&&*device_id, &now]).await? else {
                    return Ok(DeviceCodeCheck::NoPendingCode);
                };
                let a = authorization_from_row(&row, 0)?;
                if typed.is_some_and(|c| {
                    secrets::constant_time_eq(c.as_str().as_bytes(), a.user_code.as_bytes())
                }) {
                    return Ok(DeviceCodeCheck::Matches);
                }
                let add = tx
                    .prepare_cached(
                        "UPDATE devices SET failed_auth_attempts = failed_auth_attempts + 1, \
                         updated = $2 WHERE id = $1 RETURNING failed_auth_attempts",
                    )
                    .await?;
                let failed = i64::from(
                    tx.query_one(&add, &[&&*device_id, &now])
                        .await?
                        .try_get::<_, i32>(0)?,
                );
                let max = i64::from(max_failed);
                if failed < max {
                    return Ok(DeviceCodeCheck::Wrong {
                        remaining: (max - failed) as u32,
                    });
                }
                let deny = tx.prepare_cached(DENY).await?;
                let lock = tx
                    .prepare_cached(
                        "UPDATE devices SET status = 'locked', updated = $2 WHERE id = $1",
                    )
                    .await?;
                let audit = tx.prepare_cached(AUDIT).await?;
                let detail = serde_json::json!({
                    "authorization_id": a.id,
                    "failed_auth_attempts": failed,
                })
                .to_string();
                let none: Option<&str> = None;
                let (device, ip) = (&*device_id, ip_address.as_deref());
                let deny_params: [&(dyn ToSql + Sync); 3] = [&a.id, &none, &now];
                let lock_params: [&(dyn ToSql + Sync); 2] = [&device, &now];
                let audit_params: [&(dyn ToSql + Sync); 6] = [
                    &now,
                    &none,
                    &"device.lock_failed_codes",
                    &device,
                    &ip,
                    &detail,
                ];
                let notify = tx.prepare_cached(&format!("SELECT {NOTIFY}")).await?;
                tokio::try_join!(
                    tx.execute(&deny, &deny_params),
                    tx.execute(&lock, &lock_params),
                    tx.execute(&audit, &audit_params),
                    tx.execute(&notify, &[]),
                )?;
                Ok(DeviceCodeCheck::Locked)
            })
        })
        .await
    }
}

/// What a decision on a code (an approval, a denial, an eviction, a device locked for wrong
/// codes) sends with its commit: other instances and a running server move their change
/// stamps when it arrives (`PgStore::listen`), so a read of the code they remember as
/// pending is not used again (RFC 8628 §3.5: the device hears of the decision at its next
/// poll). No change counter moves: decisions are too frequent for one contended row, and
/// what they change is a code, not a client, user or key a cache holds for long.
const NOTIFY: &str = "pg_notify('hallpass_changes', 'devices')";

/// The name of the CTE that sends [`NOTIFY`] (a CTE that reads is run only when referenced,
/// hence the `* 0` terms that reference it).
const DECIDED: &str = "notified";

/// Marks a live, undecided authorization ($1) denied by $2 (`None`: the command line) at $3.
const DENY: &str = "UPDATE device_authorizations SET approved_by_account_id = $2, denied_at = $3 \
     WHERE id = $1 AND approved_at IS NULL AND denied_at IS NULL \
     AND consumed_at IS NULL AND expires_at > $3";

/// Appends an audit event: at, actor, action, target, address, detail.
const AUDIT: &str = "INSERT INTO audit_events (at, actor, action, target_id, ip_address, detail) \
     VALUES ($1, $2, $3, $4, $5, $6)";

/// The read half of a poll: the client authenticated and the authorization of the device
/// code (any state) with its shared poll mark, sent together (one trip, pipelined, when the
/// client must be read).
async fn poll_read<C: GenericClient + Sync>(
    conn: &C,
    auth: &ClientAuth,
    device_code: &str,
) -> Result<Result<PollRead, OAuthError>, PgError> {
    let key = secrets::token_key(device_code);
    let stmt = conn
        .prepare_cached(&format!(
            "SELECT {}, {} FROM device_authorizations a \
             LEFT JOIN poll_state p ON p.authorization_id = a.id \
             WHERE a.device_code_hash = $1",
            prefixed("a", AUTH_COLUMNS),
            prefixed("p", MARK_COLUMNS)
        ))
        .await?;
    let (authed, row) = tokio::try_join!(rows::authenticate(conn, auth), async {
        conn.query_opt(&stmt, &[&key]).await.map_err(PgError::from)
    })?;
    let (client, fresh) = match authed {
        Ok(read) => read,
        Err(e) => return Ok(Err(e)),
    };
    let (authorization, shared) = match &row {
        Some(r) => (
            Some(authorization_from_row(r, 0)?),
            mark_from_row(r, AUTH_WIDTH)?,
        ),
        None => (None, None),
    };
    Ok(Ok(PollRead {
        client: ClientRead {
            client,
            fresh,
            key: None,
        },
        authorization,
        shared,
    }))
}

/// Where the joined rows of [`exchange`]'s read start.
const X_DEVICE: usize = AUTH_WIDTH;
const X_USER: usize = X_DEVICE + DEVICE_WIDTH;
const X_CLIENT: usize = X_USER + 7;

/// Exchanges an approved code for tokens (RFC 8628 §3.5): a read of the authorization with its
/// device, the device's user and the client; the decisions; then one statement that consumes
/// the code only if it is still approved and unconsumed, and with it activates the device and
/// stores the refresh token. Of many simultaneous polls on any instances exactly one consumes
/// it: the others wait for its row lock, find `consumed_at` set, change nothing, and answer
/// `invalid_grant`, as for a used code. The active key is read beside it (pipelined).
async fn exchange<C: GenericClient + Sync>(conn: &C, x: &Exchange) -> Result<Exchanged, PgError> {
    let key = secrets::token_key(&x.device_code);
    // The consume below requires the device and its user as this read found them; when either
    // changed in between (a lock, a disabled user, a demotion), it stores nothing and the
    // decision is made again on a new read. Bounded: a change each time is an admin's hand.
    for _ in 0..4 {
        if let Some(done) = exchange_once(conn, x, &key).await? {
            return Ok(done);
        }
    }
    Err(PgError::Busy(
        "the device or its user kept changing during the exchange".into(),
    ))
}

/// One read and decision of [`exchange`]; `None` when the device or user changed before the
/// consume (read again).
async fn exchange_once<C: GenericClient + Sync>(
    conn: &C,
    x: &Exchange,
    key: &[u8],
) -> Result<Option<Exchanged>, PgError> {
    let read = conn
        .prepare_cached(&format!(
            "SELECT {}, {}, {}, {} FROM device_authorizations a \
             LEFT JOIN devices d ON d.id = a.device_id \
             LEFT JOIN users u ON u.id = d.user_id \
             LEFT JOIN oauth_clients c ON c.client_id = a.client_id \
             WHERE a.device_code_hash = $1",
            prefixed("a", AUTH_COLUMNS),
            prefixed("d", DEVICE_COLUMNS),
            prefixed("u", USER_COLUMNS),
            prefixed("c", CLIENT_COLUMNS)
        ))
        .await?;
    let refused = |error| Exchanged {
        outcome: PollOutcome::Refused {
            error,
            interval: None,
        },
        key: None,
    };
    let Some(row) = conn.query_opt(&read, &[&key]).await? else {
        return Ok(Some(refused(ErrorCode::InvalidGrant)));
    };
    let a = authorization_from_row(&row, 0)?;
    if let PollDecision::Refuse { error, .. } =
        poll::decide(Some(&rules::poll_state(&a, &x.client_id)), x.now)
    {
        return Ok(Some(refused(error)));
    }
    let now = x.now;
    let Some(device) = device_from_row(&row, X_DEVICE)? else {
        return Ok(Some(refused(ErrorCode::AccessDenied)));
    };
    let joined = user_from_row(&row, X_USER)?;
    let holder = rules::device_holder(&device, now, |id| {
        Ok::<_, PgError>(joined.filter(|u| u.id == id))
    })?;
    let Some(user) = holder else {
        return Ok(Some(refused(ErrorCode::AccessDenied)));
    };
    if row.try_get::<_, Option<String>>(X_CLIENT)?.is_none() {
        return Ok(Some(refused(ErrorCode::AccessDenied)));
    }
    let client = client_from_row(&row, X_CLIENT)?;
    // The client's scopes may have shrunk, or the user lost admin, since the code was issued.
    let asked = Scope::parse(&a.scope).unwrap_or_default();
    let scope = rules::effective_scope(&asked, &client.allowed_scopes, user.is_admin).to_string();
    let audience = match rules::audience(&client, &x.target, device.resource.as_deref()) {
        Ok(aud) => aud,
        Err(e) => {
            return Ok(Some(Exchanged {
                outcome: PollOutcome::BadTarget(e),
                key: None,
            }))
        }
    };
    let refresh_token = secrets::new_ordered_token();
    let token_hash = secrets::token_key(&refresh_token);
    let family = uuid::Uuid::new_v4().to_string();
    let consume = conn
        .prepare_cached(
            // The user's row is share-locked and the device's updated as the read found
            // them (a concurrent lock or disable is waited for, then seen: READ COMMITTED
            // re-checks an updated row), and the code is consumed only then.
            "WITH u AS (SELECT id FROM users WHERE id = $8 AND updated = $9 AND NOT disabled \
                 AND is_admin = $10 FOR SHARE), \
             d AS (UPDATE devices SET status = 'active', last_login = $2, updated = $2 \
                 WHERE id = $7 AND updated = $11 AND status IN ('verified', 'active') \
                 AND EXISTS (SELECT 1 FROM u) RETURNING id), \
             c AS (UPDATE device_authorizations SET consumed_at = $2 \
                 WHERE id = $1 AND approved_at IS NOT NULL AND consumed_at IS NULL \
                 AND expires_at > $2 AND EXISTS (SELECT 1 FROM d) RETURNING device_id), \
             r AS (INSERT INTO refresh_tokens (token_hash, device_id, family, scope, \
                 created_at, expires_at) SELECT $3, device_id, $4, $5, $2, $6 FROM c) \
             SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM d)",
        )
        .await?;
    let (consumed, kid) = tokio::try_join!(
        async {
            conn.query_one(
                &consume,
                &[
                    &a.id,
                    &now,
                    &token_hash,
                    &family,
                    &scope,
                    &x.refresh_expires_at,
                    &device.id,
                    &user.id,
                    &user.updated,
                    &user.is_admin,
                    &device.updated,
                ],
            )
            .await
            .map_err(PgError::from)
        },
        rows::active_kid(conn, x.algorithm)
    )?;
    if count(&consumed, 0)? == 0 {
        if count(&consumed, 1)? == 0 {
            // The device or user changed since the read (or the device update lost to the
            // consume of a racing poll, whose next read says invalid_grant): decide again.
            return Ok(None);
        }
        return Ok(Some(refused(ErrorCode::InvalidGrant)));
    }
    Ok(Some(Exchanged {
        outcome: PollOutcome::Issued(Grant {
            user_id: user.id,
            device_id: device.id,
            scope,
            audience,
            refresh_token,
        }),
        key: Some(ActiveKey {
            algorithm: x.algorithm,
            kid,
        }),
    }))
}

/// A typed code's authorization (any state) with its device, its client's name and whether
/// the would-be approver is an admin: what looking up, approving and denying a code read.
struct Found {
    authorization: Option<DeviceAuthorization>,
    device: Option<Device>,
    client_name: Option<String>,
    approver_is_admin: bool,
}

impl Found {
    /// The live, undecided authorization and its device, or why not (SQLite's `find_pending`).
    fn pending(&self, now: i64) -> Result<Pending, CodeProblem> {
        let Some(a) = &self.authorization else {
            return Err(CodeProblem::Unknown);
        };
        if let Some(problem) = rules::code_problem(a, now) {
            return Err(problem);
        }
        let Some(device) = &self.device else {
            return Err(CodeProblem::Unknown);
        };
        Ok(Pending {
            authorization: a.clone(),
            device: device.clone(),
        })
    }

    /// When `user_id` approved this code, if they did.
    fn approved_by(&self, user_id: &str) -> Option<i64> {
        self.authorization
            .as_ref()
            .filter(|a| a.approved_by_account_id.as_deref() == Some(user_id))
            .and_then(|a| a.approved_at)
    }
}

/// Reads what [`Found`] holds for the code `typed` (nothing when it cannot be a code), in one
/// statement; `approver` is the user whose admin flag to read.
async fn find_code<C: GenericClient>(
    conn: &C,
    typed: &str,
    approver: Option<&str>,
) -> Result<Found, PgError> {
    let none = Found {
        authorization: None,
        device: None,
        client_name: None,
        approver_is_admin: false,
    };
    let Some(code) = UserCode::parse(typed) else {
        return Ok(none);
    };
    let stmt = conn
        .prepare_cached(&format!(
            "SELECT {}, {}, c.name, coalesce((SELECT is_admin FROM users WHERE id = $2), FALSE) \
             FROM device_authorizations a \
             LEFT JOIN devices d ON d.id = a.device_id \
             LEFT JOIN oauth_clients c ON c.client_id = a.client_id \
             WHERE a.user_code = $1",
            prefixed("a", AUTH_COLUMNS),
            prefixed("d", DEVICE_COLUMNS)
        ))
        .await?;
    let Some(row) = conn.query_opt(&stmt, &[&code.as_str(), &approver]).await? else {
        return Ok(none);
    };
    Ok(Found {
        authorization: Some(authorization_from_row(&row, 0)?),
        device: device_from_row(&row, AUTH_WIDTH)?,
        client_name: row.try_get(AUTH_WIDTH + DEVICE_WIDTH)?,
        approver_is_admin: row.try_get(AUTH_WIDTH + DEVICE_WIDTH + 1)?,
    })
}

/// Denies the code `typed`, with its audit record, in one statement after the read.
async fn deny<C: GenericClient>(
    conn: &C,
    typed: &str,
    actor: &Actor,
    now: i64,
) -> Result<Result<(), CodeProblem>, PgError> {
    let pending = match find_code(conn, typed, None).await?.pending(now) {
        Ok(p) => p,
        Err(problem) => return Ok(Err(problem)),
    };
    let a = &pending.authorization;
    let detail = serde_json::json!({
        "authorization_id": a.id,
        "client_id": a.client_id,
    })
    .to_string();
    let stmt = conn
        .prepare_cached(&format!(
            "WITH dn AS (UPDATE device_authorizations \
                 SET approved_by_account_id = $2, denied_at = $3 \
                 WHERE id = $1 AND approved_at IS NULL AND denied_at IS NULL \
                 AND consumed_at IS NULL AND expires_at > $3 RETURNING device_id), \
             au AS (INSERT INTO audit_events (at, actor, action, target_id, ip_address, detail) \
                 SELECT $3, $2, 'device.deny', device_id, $4, $5 FROM dn), \
             {DECIDED} AS (SELECT {NOTIFY} FROM dn) \
             SELECT (SELECT count(*) FROM dn) + (SELECT count(*) FROM {DECIDED}) * 0"
        ))
        .await?;
    let row = conn
        .query_one(
            &stmt,
            &[&a.id, &actor.user_id, &now, &actor.ip_address, &detail],
        )
        .await?;
    if count(&row, 0)? == 0 {
        return Ok(Err(CodeProblem::AlreadyUsed));
    }
    Ok(Ok(()))
}

/// An authorization by id.
async fn find_authorization<C: GenericClient>(
    conn: &C,
    id: &str,
) -> Result<Option<DeviceAuthorization>, PgError> {
    let stmt = conn
        .prepare_cached(&format!(
            "SELECT {AUTH_COLUMNS} FROM device_authorizations WHERE id = $1"
        ))
        .await?;
    match conn.query_opt(&stmt, &[&id]).await? {
        Some(r) => Ok(Some(authorization_from_row(&r, 0)?)),
        None => Ok(None),
    }
}

/// A page of authorizations, newest first (ties by id), with the total count: both sent
/// together.
async fn list<C: GenericClient + Sync>(
    conn: &C,
    state: Option<AuthorizationState>,
    client_id: Option<&str>,
    now: i64,
    offset: u32,
    limit: u32,
) -> Result<(Vec<DeviceAuthorization>, u64), PgError> {
    let clause = format!(
        "({}) AND ($2::text IS NULL OR client_id = $2)",
        state.map_or("$1::bigint IS NOT NULL", state_condition)
    );
    let total = conn
        .prepare_cached(&format!(
            "SELECT count(*) FROM device_authorizations WHERE {clause}"
        ))
        .await?;
    let page = conn
        .prepare_cached(&format!(
            "SELECT {AUTH_COLUMNS} FROM device_authorizations WHERE {clause} \
             ORDER BY created_at DESC, id LIMIT $3 OFFSET $4"
        ))
        .await?;
    let (limit, offset) = (big(limit), big(offset));
    let total_params: [&(dyn ToSql + Sync); 2] = [&now, &client_id];
    let page_params: [&(dyn ToSql + Sync); 4] = [&now, &client_id, &limit, &offset];
    let (total, rows) = tokio::try_join!(
        conn.query_one(&total, &total_params),
        conn.query(&page, &page_params),
    )?;
    let rows = rows
        .iter()
        .map(|r| authorization_from_row(r, 0))
        .collect::<Result<_, _>>()?;
    Ok((rows, count(&total, 0)?))
}

/// The admins' page: the counts by state and every client (sent together), then the page's
/// rows joined with their devices, clients and users.
async fn authorizations_page<C: GenericClient + Sync>(
    conn: &C,
    listing: Listing,
    client_id: Option<&str>,
    now: i64,
    page: u32,
    page_size: u32,
) -> Result<AuthorizationsPage, PgError> {
    let counts_sql = format!(
        "SELECT count(*) FILTER (WHERE {}), count(*) FILTER (WHERE {}), \
         count(*) FILTER (WHERE {}), count(*) FILTER (WHERE {}), count(*) FILTER (WHERE {}) \
         FROM device_authorizations WHERE $2::text IS NULL OR client_id = $2",
        state_condition(AuthorizationState::Pending),
        state_condition(AuthorizationState::Approved),
        state_condition(AuthorizationState::Denied),
        state_condition(AuthorizationState::Consumed),
        state_condition(AuthorizationState::Expired),
    );
    let counts_stmt = conn.prepare_cached(&counts_sql).await?;
    let clients_stmt = conn
        .prepare_cached(&format!(
            "SELECT {CLIENT_COLUMNS} FROM oauth_clients ORDER BY created, client_id"
        ))
        .await?;
    let counts_params: [&(dyn ToSql + Sync); 2] = [&now, &client_id];
    let (c, clients) = tokio::try_join!(
        conn.query_one(&counts_stmt, &counts_params),
        conn.query(&clients_stmt, &[]),
    )?;
    let counts = StateCounts {
        pending: count(&c, 0)?,
        approved: count(&c, 1)?,
        denied: count(&c, 2)?,
        consumed: count(&c, 3)?,
        expired: count(&c, 4)?,
    };
    let clients = clients
        .iter()
        .map(|r| client_from_row(r, 0))
        .collect::<Result<_, _>>()?;
    // A page past the end (the list shrank since the link was made): the last one.
    let pages = counts.of(listing).div_ceil(u64::from(page_size)).max(1);
    let page = u64::from(page).min(pages) as u32;
    let offset = (page - 1) * page_size;
    // The page is cut from device_authorizations alone first, so the joins touch only its
    // rows.
    let stmt = conn
        .prepare_cached(&format!(
            "SELECT {}, c.name, d.name, d.os, d.hostname, d.ip_address, d.city, d.region, \
             d.country, u.username \
             FROM (SELECT {AUTH_COLUMNS} FROM device_authorizations \
                   WHERE ({}) AND ($2::text IS NULL OR client_id = $2) \
                   ORDER BY created_at DESC, id LIMIT $3 OFFSET $4) a \
             LEFT JOIN devices d ON d.id = a.device_id \
             LEFT JOIN oauth_clients c ON c.client_id = a.client_id \
             LEFT JOIN users u ON u.id = coalesce(a.approved_by_account_id, d.user_id) \
             ORDER BY a.created_at DESC, a.id",
            prefixed("a", AUTH_COLUMNS),
            listing_condition(listing)
        ))
        .await?;
    let rows = conn
        .query(&stmt, &[&now, &client_id, &big(page_size), &big(offset)])
        .await?
        .iter()
        .map(|r| {
            let w = AUTH_WIDTH;
            Ok(Overview {
                authorization: authorization_from_row(r, 0)?,
                client_name: r.try_get(w)?,
                device_name: r.try_get(w + 1)?,
                os: r.try_get(w + 2)?,
                hostname: r.try_get(w + 3)?,
                ip_address: r.try_get(w + 4)?,
                city: r.try_get(w + 5)?,
                region: r.try_get(w + 6)?,
                country: r.try_get(w + 7)?,
                username: r.try_get(w + 8)?,
            })
        })
        .collect::<Result<_, PgError>>()?;
    Ok(AuthorizationsPage {
        counts,
        rows,
        clients,
        page,
    })
}

/// Writes back poll times remembered in memory, in one statement: `last_polled_at` never
/// moves back, an interval grown from memory is stored (never lowered).
async fn write_poll_times<C: GenericClient>(conn: &C, times: &[PollTime]) -> Result<(), PgError> {
    let ids: Vec<&str> = times.iter().map(|t| t.0.as_str()).collect();
    let ats: Vec<i64> = times.iter().map(|t| t.1).collect();
    let intervals: Vec<Option<i32>> = times.iter().map(|t| t.2.map(seconds)).collect();
    let stmt = conn
        .prepare_cached(
            "UPDATE device_authorizations a \
             SET last_polled_at = greatest(coalesce(a.last_polled_at, 0), t.at), \
             poll_interval_seconds = greatest(a.poll_interval_seconds, coalesce(t.iv, 0)) \
             FROM unnest($1::text[], $2::bigint[], $3::int[]) AS t(id, at, iv) \
             WHERE a.id = t.id",
        )
        .await?;
    conn.execute(&stmt, &[&ids, &ats, &intervals]).await?;
    Ok(())
}

/// One batch of at most `limit` expired rows of one kind; answers how many went.
///
/// The batch of [`Expired::Authorizations`] also reaps what several instances share in
/// the database and nobody else deletes: `poll_state` rows of codes that have expired, and
/// `limit_buckets` rows that have refilled completely (`coordination::reap_buckets`), a batch
/// of each, sent with it; on the last batch of a pass (fewer than `limit` authorizations) they
/// go on in batches until none is left. Only the authorizations are counted.
async fn purge<C: GenericClient + Sync>(
    conn: &C,
    what: Expired,
    now: i64,
    limit: u32,
) -> Result<usize, PgError> {
    let sql = match what {
        Expired::Authorizations => super::flow_sql::PURGE_AUTHORIZATIONS,
        Expired::RefreshTokens => {
            "DELETE FROM refresh_tokens WHERE token_hash IN \
             (SELECT token_hash FROM refresh_tokens WHERE expires_at <= $1 LIMIT $2)"
        }
        Expired::Devices => {
            "DELETE FROM devices WHERE id IN \
             (SELECT id FROM devices WHERE expires <= $1 LIMIT $2)"
        }
        Expired::Revocations => {
            "DELETE FROM revoked_access_tokens WHERE jti IN \
             (SELECT jti FROM revoked_access_tokens WHERE expires_at <= $1 LIMIT $2)"
        }
        Expired::Sessions => {
            "DELETE FROM sessions WHERE id_hash IN \
             (SELECT id_hash FROM sessions WHERE expires_at <= $1 LIMIT $2)"
        }
    };
    let batch = big(limit);
    let stmt = conn.prepare_cached(sql).await?;
    if what != Expired::Authorizations {
        return Ok(conn.execute(&stmt, &[&now, &batch]).await? as usize);
    }
    let marks = conn
        .prepare_cached(
            "DELETE FROM poll_state WHERE authorization_id IN (SELECT authorization_id \
             FROM poll_state WHERE expires_at <= $1 LIMIT $2)",
        )
        .await?;
    let (n, mut m, mut b) = tokio::try_join!(
        async {
            conn.execute(&stmt, &[&now, &batch])
                .await
                .map_err(PgError::from)
        },
        async {
            conn.execute(&marks, &[&now, &batch])
                .await
                .map_err(PgError::from)
        },
        coordination::reap_buckets(conn, now, batch),
    )?;
    if n < u64::from(limit) {
        // The pass's last batch of authorizations: finish the shared tables' backlog.
        let full = u64::from(limit);
        while m >= full {
            m = conn.execute(&marks, &[&now, &batch]).await?;
        }
        while b >= full {
            b = coordination::reap_buckets(conn, now, batch).await?;
        }
    }
    Ok(n as usize)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The joined read of an exchange is laid out as the offsets say.
    #[test]
    fn exchange_offsets_follow_the_column_lists() {
        let n = |s: &str| s.split(',').count();
        assert_eq!(n(AUTH_COLUMNS), AUTH_WIDTH);
        assert_eq!(n(DEVICE_COLUMNS), DEVICE_WIDTH);
        assert_eq!(X_CLIENT, AUTH_WIDTH + DEVICE_WIDTH + n(USER_COLUMNS));
    }
}
