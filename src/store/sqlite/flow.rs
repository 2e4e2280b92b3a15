//! The device flow's transactions (RFC 8628 §3) on SQLite: start an authorization, approve or
//! deny it, read a poll, exchange a code. Each takes a connection and runs synchronously; the
//! [`super::SqliteStore`] method of the same name decides where (in place, the group-commit
//! writer, or a pooled connection). Decisions come from [`crate::domain::rules`] and
//! [`crate::protocol`].

use rusqlite::Connection;

use super::db::device_authorizations as auths;
use super::db::{self, audit, clients, devices, refresh_tokens, users, DbError};
use crate::domain::model::{
    Actor, CodeProblem, Device, DeviceAuthorization, DeviceCodeCheck, DeviceStatus, Grant, Pending,
    PollOutcome, Started,
};
use crate::domain::rules;
use crate::protocol::codes::UserCode;
use crate::protocol::error::{ErrorCode, OAuthError};
use crate::protocol::poll::{self, PollDecision};
use crate::protocol::scope::Scope;
use crate::store::{
    Admission, Approval, ApprovalRefused, CodeLookup, Exchange, NewAuthorization, PendingCode,
    PollRead, StartOutcome,
};

/// Authenticates the client, checks the scope and resources it asks for, and acts on the cap's
/// admission (see [`crate::store::Admission`]).
pub fn start_authorization(
    conn: &mut Connection,
    new: &NewAuthorization,
) -> Result<Result<StartOutcome, OAuthError>, DbError> {
    let client = match super::auth::authenticate(conn, &new.auth)? {
        Ok((client, _)) => client,
        Err(e) => return Ok(Err(e)),
    };
    let scope = match rules::requested_scope(&new.scope, &client) {
        Ok(s) => s.to_string(),
        Err(e) => return Ok(Err(e)),
    };
    if let Some(asked) = &new.facts.resource {
        if let Err(e) = client.allowed(&new.server_audience).check(asked) {
            return Ok(Err(OAuthError::new(ErrorCode::InvalidTarget, e)));
        }
    }
    // At the cap, the address holding the most gives up its oldest code to an address holding
    // fewer (the cap's decision, made before the trip): a flood cannot lock other devices out.
    let evicted = match &new.admission {
        Admission::Full => return Ok(Ok(StartOutcome::Full)),
        Admission::Recount { cap, addresses } => {
            let codes = pending_codes(conn, &client.client_id, new.now, *cap, *addresses)?;
            return Ok(Ok(StartOutcome::Recount(codes)));
        }
        Admission::Issue { evict: Some(id) } => auths::evict(conn, id, new.now)?,
        Admission::Issue { evict: None } => false,
    };
    let started = start(conn, new, &client.client_id, &scope)?;
    Ok(Ok(StartOutcome::Started { started, evicted }))
}

/// A client's live, undecided codes, earliest expiry first, at most `cap`: with each code's
/// device address if `addresses`, or if the client turns out to hold `cap` codes (only sharing
/// the cap needs the addresses, and reading them is a join).
fn pending_codes(
    conn: &Connection,
    client_id: &str,
    now: i64,
    cap: usize,
    addresses: bool,
) -> Result<Vec<PendingCode>, DbError> {
    let read = |addresses| {
        let mut codes = Vec::new();
        auths::pending_for_client(conn, client_id, now, cap, addresses, |id, e, ip| {
            codes.push(PendingCode {
                id: id.to_string(),
                expires_at: e,
                ip_address: ip.map(str::to_string),
            })
        })?;
        Ok::<_, DbError>(codes)
    };
    let codes = read(addresses)?;
    if !addresses && codes.len() >= cap {
        return read(true);
    }
    Ok(codes)
}

/// Creates a pending device and its authorization (RFC 8628 §3.1–3.2).
fn start(
    conn: &mut Connection,
    new: &NewAuthorization,
    client_id: &str,
    scope: &str,
) -> Result<Started, DbError> {
    let (facts, now, expires_at) = (&new.facts, new.now, new.expires_at);
    let tx = db::write_tx(conn)?;
    let device = Device {
        id: new.device_id.clone(),
        client_id: client_id.to_string(),
        user_id: None,
        name: facts.name.clone(),
        status: DeviceStatus::Pending,
        trusted_device: false,
        expires: expires_at,
        os: facts.os.clone(),
        ip_address: facts.ip_address.clone(),
        hostname: facts.hostname.clone(),
        city: facts.location.city.clone(),
        region: facts.location.region.clone(),
        country: facts.location.country.clone(),
        last_login: None,
        device_metadata: serde_json::json!({ "user_agent": facts.user_agent }).to_string(),
        failed_auth_attempts: 0,
        created: now,
        updated: now,
        resource: facts.resource.clone(),
    };
    devices::insert(&tx, &device)?;
    let device_code = new.device_code.clone();
    let mut authorization = DeviceAuthorization {
        id: new.authorization_id.clone(),
        created_at: now,
        client_id: client_id.to_string(),
        device_id: device.id.clone(),
        user_code: String::new(),
        scope: scope.to_string(),
        expires_at,
        poll_interval_seconds: new.poll_interval_seconds,
        last_polled_at: None,
        approved_by_account_id: None,
        approved_at: None,
        denied_at: None,
        consumed_at: None,
    };
    // User codes are unique across every stored row (live or not yet reaped). With 20^8 codes a
    // collision is rare; a failed INSERT rolls back only itself, so we draw again.
    let mut attempts = 0;
    let mut drawn = Some(new.user_code.clone());
    let user_code = loop {
        let code = drawn.take().unwrap_or_else(UserCode::generate);
        authorization.user_code = code.as_str().to_string();
        match auths::insert(&tx, &authorization, &device_code.key()) {
            Ok(()) => break code,
            Err(e) if db::is_unique_violation(&e) && attempts < 10 => attempts += 1,
            Err(e) => return Err(e.into()),
        }
    };
    tx.commit()?;
    Ok(Started {
        device_code,
        user_code,
        authorization,
    })
}

/// Finds the live, undecided authorization for a typed user code.
pub fn find_pending(
    conn: &Connection,
    typed: &str,
    now: i64,
) -> Result<Result<Pending, CodeProblem>, DbError> {
    let Some(code) = UserCode::parse(typed) else {
        return Ok(Err(CodeProblem::Unknown));
    };
    let Some(a) = auths::find_by_user_code(conn, code.as_str())? else {
        return Ok(Err(CodeProblem::Unknown));
    };
    if let Some(problem) = rules::code_problem(&a, now) {
        return Ok(Err(problem));
    }
    let Some(device) = devices::find(conn, &a.device_id)? else {
        return Ok(Err(CodeProblem::Unknown));
    };
    Ok(Ok(Pending {
        authorization: a,
        device,
    }))
}

/// Checks `typed` against the live code of device `device_id`, counting a wrong one against
/// the device (`devices.failed_auth_attempts`); at `max_failed` (`oauth.max_failed_code_attempts`)
/// the device is locked and its authorization denied, in the same transaction (RFC 8628 §5.1).
fn check_code_for_device(
    conn: &mut Connection,
    max_failed: u32,
    device_id: &str,
    typed: &str,
    ip_address: Option<&str>,
    now: i64,
) -> Result<DeviceCodeCheck, DbError> {
    let tx = db::write_tx(conn)?;
    let Some(a) = auths::find_undecided_for_device(&tx, device_id, now)? else {
        return Ok(DeviceCodeCheck::NoPendingCode);
    };
    if UserCode::parse(typed).is_some_and(|c| {
        crate::secrets::constant_time_eq(c.as_str().as_bytes(), a.user_code.as_bytes())
    }) {
        return Ok(DeviceCodeCheck::Matches);
    }
    let failed = devices::add_failed_attempt(&tx, device_id, now)?;
    let max = i64::from(max_failed);
    let outcome = if failed >= max {
        auths::deny(&tx, &a.id, None, now)?;
        devices::force_lock(&tx, device_id, now)?;
        audit::record(
            &tx,
            now,
            None,
            "device.lock_failed_codes",
            device_id,
            ip_address,
            &serde_json::json!({ "authorization_id": a.id, "failed_auth_attempts": failed }),
        )?;
        DeviceCodeCheck::Locked
    } else {
        DeviceCodeCheck::Wrong {
            remaining: (max - failed) as u32,
        }
    };
    tx.commit()?;
    Ok(outcome)
}

/// Approves a code (after checking it against the named device, for ZenML's verify-by-device).
/// The device becomes the user's, `verified`, until `approval.device_expires`.
pub fn approve(
    conn: &mut Connection,
    approval: &Approval,
) -> Result<Result<Device, ApprovalRefused>, DbError> {
    let (typed, now) = (approval.typed.as_str(), approval.now);
    let ip_address = approval.ip_address.as_deref();
    // A wrong code for the named device counts against that device, which is locked after
    // oauth.max_failed_code_attempts.
    if let Some((device_id, max_failed)) = &approval.for_device {
        match check_code_for_device(conn, *max_failed, device_id, typed, ip_address, now)? {
            DeviceCodeCheck::Matches => {}
            DeviceCodeCheck::NoPendingCode => return Ok(Err(ApprovalRefused::NoPendingCode)),
            DeviceCodeCheck::Wrong { remaining } => {
                return Ok(Err(ApprovalRefused::Wrong { remaining }))
            }
            DeviceCodeCheck::Locked => return Ok(Err(ApprovalRefused::Locked)),
        }
    }
    let user_id = approval.user_id.as_str();
    let tx = db::write_tx(conn)?;
    let pending = match find_pending(&tx, typed, now)? {
        Ok(p) => p,
        Err(problem) => return Ok(Err(ApprovalRefused::Code(problem))),
    };
    let approver_is_admin = users::find_by_id(&tx, user_id)?.is_some_and(|u| u.is_admin);
    if rules::needs_admin(&pending.authorization.scope, approver_is_admin) {
        return Ok(Err(ApprovalRefused::Code(CodeProblem::NeedsAdmin)));
    }
    if !auths::approve(&tx, &pending.authorization.id, user_id, now)? {
        return Ok(Err(ApprovalRefused::Code(CodeProblem::AlreadyUsed)));
    }
    let trusted = approval.trusted;
    devices::mark_verified(
        &tx,
        &pending.device.id,
        user_id,
        trusted,
        approval.device_expires,
        now,
    )?;
    audit::record(
        &tx,
        now,
        Some(user_id),
        "device.approve",
        &pending.device.id,
        ip_address,
        &serde_json::json!({
            "authorization_id": pending.authorization.id,
            "client_id": pending.authorization.client_id,
            "scope": pending.authorization.scope,
            "trusted_device": trusted,
        }),
    )?;
    let device = devices::find(&tx, &pending.device.id)?.unwrap_or(pending.device);
    tx.commit()?;
    Ok(Ok(device))
}

/// Denies the code. The device's next poll gets `access_denied`.
pub fn deny(
    conn: &mut Connection,
    typed: &str,
    actor: &Actor,
    now: i64,
) -> Result<Result<(), CodeProblem>, DbError> {
    let tx = db::write_tx(conn)?;
    let pending = match find_pending(&tx, typed, now)? {
        Ok(p) => p,
        Err(problem) => return Ok(Err(problem)),
    };
    if !auths::deny(
        &tx,
        &pending.authorization.id,
        actor.user_id.as_deref(),
        now,
    )? {
        return Ok(Err(CodeProblem::AlreadyUsed));
    }
    audit::record(
        &tx,
        now,
        actor.user_id.as_deref(),
        "device.deny",
        &pending.device.id,
        actor.ip_address.as_deref(),
        &serde_json::json!({
            "authorization_id": pending.authorization.id,
            "client_id": pending.authorization.client_id,
        }),
    )?;
    tx.commit()?;
    Ok(Ok(()))
}

/// Denies an authorization by id; `None` when there is none (or it went meanwhile). Answers
/// the authorization as it now is, or why it could not be denied.
pub fn deny_authorization(
    conn: &mut Connection,
    id: &str,
    actor: &Actor,
    now: i64,
) -> Result<Option<Result<DeviceAuthorization, CodeProblem>>, DbError> {
    let Some(a) = auths::find(conn, id)? else {
        return Ok(None);
    };
    if let Err(problem) = deny(conn, &a.user_code, actor, now)? {
        return Ok(Some(Err(problem)));
    }
    Ok(auths::find(conn, &a.id)?.map(Ok))
}

/// A typed code for the person about to decide it: its authorization, device and client's
/// name; or why not, and when `viewer` approved it if they did (going Back to a code you just
/// approved says so instead of alarming you that it was used).
pub fn look_up_code(
    conn: &Connection,
    typed: &str,
    viewer: Option<&str>,
    now: i64,
) -> Result<CodeLookup, DbError> {
    Ok(match find_pending(conn, typed, now)? {
        Ok(pending) => {
            let client_name =
                clients::find(conn, &pending.authorization.client_id)?.map(|c| c.name);
            CodeLookup::Pending {
                pending,
                client_name,
            }
        }
        Err(problem) => CodeLookup::Problem {
            problem,
            approved_by_viewer: match viewer {
                Some(user_id) => approved_by(conn, typed, user_id)?,
                None => None,
            },
        },
    })
}

/// When `user_id` approved the code `typed`, if they did.
pub fn approved_by(conn: &Connection, typed: &str, user_id: &str) -> Result<Option<i64>, DbError> {
    let Some(code) = UserCode::parse(typed) else {
        return Ok(None);
    };
    Ok(auths::find_by_user_code(conn, code.as_str())?
        .filter(|a| a.approved_by_account_id.as_deref() == Some(user_id))
        .and_then(|a| a.approved_at))
}

/// The read half of a poll: the client authenticated, and the authorization of the device code
/// (any state). Writes nothing: the poll's answer is decided by the caller, with what it
/// remembers of earlier polls.
pub fn poll_read(
    conn: &Connection,
    auth: &crate::store::ClientAuth,
    device_code: &str,
) -> Result<Result<PollRead, OAuthError>, DbError> {
    let (client, fresh) = match super::auth::authenticate(conn, auth)? {
        Ok(read) => read,
        Err(e) => return Ok(Err(e)),
    };
    let key = crate::secrets::token_key(device_code);
    let authorization = auths::find_by_device_code_hash(conn, &key)?;
    Ok(Ok(PollRead {
        client: crate::store::ClientRead {
            client,
            fresh,
            key: None,
        },
        authorization,
        shared: None,
    }))
}

/// Exchanges an approved code for tokens, in one write transaction that reads the row again
/// and consumes it conditionally, so of many simultaneous polls exactly one gets tokens; the
/// others get `invalid_grant`, as for a used code.
///
/// The device and its user are checked again (a user disabled or a device locked after
/// approval gets `access_denied`), not only at approval; so is the audience (`target`) the
/// client may have.
pub fn exchange(conn: &mut Connection, x: &Exchange) -> Result<PollOutcome, DbError> {
    let key = crate::secrets::token_key(&x.device_code);
    let tx = db::write_tx(conn)?;
    let outcome = match auths::find_by_device_code_hash(&tx, &key)? {
        Some(a) => match poll::decide(Some(&rules::poll_state(&a, &x.client_id)), x.now) {
            PollDecision::Issue => issue(&tx, x, &a)?,
            PollDecision::Refuse { error, .. } => PollOutcome::Refused {
                error,
                interval: None,
            },
        },
        None => PollOutcome::Refused {
            error: ErrorCode::InvalidGrant,
            interval: None,
        },
    };
    tx.commit()?;
    Ok(outcome)
}

fn issue(conn: &Connection, x: &Exchange, a: &DeviceAuthorization) -> Result<PollOutcome, DbError> {
    let now = x.now;
    let denied = PollOutcome::Refused {
        error: ErrorCode::AccessDenied,
        interval: None,
    };
    let Some(device) = devices::find(conn, &a.device_id)? else {
        return Ok(denied);
    };
    let Some(user) = super::tokens::device_holder(conn, &device, now)? else {
        return Ok(denied);
    };
    let Some(client) = clients::find(conn, &a.client_id)? else {
        return Ok(denied);
    };
    // The client's scopes may have shrunk, or the user lost admin, since the code was issued.
    let asked = Scope::parse(&a.scope).unwrap_or_default();
    let scope = rules::effective_scope(&asked, &client.allowed_scopes, user.is_admin).to_string();
    let audience = match rules::audience(&client, &x.target, device.resource.as_deref()) {
        Ok(aud) => aud,
        Err(e) => return Ok(PollOutcome::BadTarget(e)),
    };
    if !auths::consume(conn, &a.id, now)? {
        return Ok(PollOutcome::Refused {
            error: ErrorCode::InvalidGrant,
            interval: None,
        });
    }
    devices::mark_active(conn, &device.id, now)?;
    let refresh_token = crate::secrets::new_ordered_token();
    let family = uuid::Uuid::new_v4().to_string();
    refresh_tokens::insert(
        conn,
        &refresh_tokens::NewRefreshToken {
            token_hash: &crate::secrets::token_key(&refresh_token),
            device_id: &device.id,
            family: &family,
            scope: &scope,
            created_at: now,
            expires_at: x.refresh_expires_at,
        },
    )?;
    Ok(PollOutcome::Issued(Grant {
        user_id: user.id,
        device_id: device.id,
        scope,
        audience,
        refresh_token,
    }))
}
