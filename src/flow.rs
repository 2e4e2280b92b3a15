//! The device flow's steps (RFC 8628 §3), each one transaction: start an authorization,
//! approve or deny it, answer a poll. The HTTP handlers, the pages, the JSON API and the
//! command line all call these, so the rules live in one place.
//!
//! Each function takes a connection and runs synchronously; async callers hand it to
//! [`crate::db::Db::run`], [`crate::db::Db::write`] (the group-commit writer) or, for a poll's
//! reads, [`crate::db::Db::read`]. Decisions come from the pure [`crate::protocol`] functions.

use rusqlite::Connection;

use crate::clock;
use crate::config::Config;
use crate::db::device_authorizations as auths;
use crate::db::{self, audit, clients, devices, refresh_tokens, users, DbError};
use crate::domain::model::{
    Actor, CodeProblem, Device, DeviceAuthorization, DeviceCodeCheck, DeviceFacts, DeviceStatus,
    Grant, Pending, PollOutcome, Started, Target,
};
use crate::domain::rules;
use crate::polls::PollTracker;
use crate::protocol::codes::{DeviceCode, UserCode};
use crate::protocol::error::{ErrorCode, OAuthError};
use crate::protocol::poll::{self, PollDecision, PollState};
use crate::protocol::scope::{self, Scope};

/// Creates a pending device and its authorization (RFC 8628 §3.1–3.2).
pub fn start(
    conn: &mut Connection,
    config: &Config,
    client_id: &str,
    scope: &str,
    facts: &DeviceFacts,
    now: i64,
) -> Result<Started, DbError> {
    let expires_at = now + clock::ms(config.device_code_lifetime);
    let tx = db::write_tx(conn)?;
    // Time-ordered ids (UUIDv7: 48 bits of milliseconds, 74 random): new rows land at the
    // right edge of the primary-key indexes instead of on a random page each, so a batch of
    // authorizations dirties a few pages, not one per row per index.
    let device = Device {
        id: uuid::Uuid::now_v7().to_string(),
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
    let device_code = DeviceCode::generate();
    let mut authorization = DeviceAuthorization {
        id: uuid::Uuid::now_v7().to_string(),
        created_at: now,
        client_id: client_id.to_string(),
        device_id: device.id.clone(),
        user_code: String::new(),
        scope: scope.to_string(),
        expires_at,
        poll_interval_seconds: config.poll_interval.as_secs() as i64,
        last_polled_at: None,
        approved_by_account_id: None,
        approved_at: None,
        denied_at: None,
        consumed_at: None,
    };
    // User codes are unique across every stored row (live or not yet reaped). With 20^8 codes a
    // collision is rare; a failed INSERT rolls back only itself, so we draw again.
    let mut attempts = 0;
    let user_code = loop {
        let code = UserCode::generate();
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
    if now >= a.expires_at {
        return Ok(Err(CodeProblem::Expired));
    }
    if a.denied_at.is_some() {
        return Ok(Err(CodeProblem::Denied));
    }
    if a.approved_at.is_some() || a.consumed_at.is_some() {
        return Ok(Err(CodeProblem::AlreadyUsed));
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
/// the device (`devices.failed_auth_attempts`); at `config.max_failed_code_attempts` the
/// device is locked and its authorization denied, in the same transaction (RFC 8628 §5.1).
pub fn check_code_for_device(
    conn: &mut Connection,
    config: &Config,
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
    let max = i64::from(config.max_failed_code_attempts);
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

/// Approves the code as `user_id`. The device becomes theirs, `verified`, and lives for the
/// trusted or untrusted lifetime from now.
pub fn approve(
    conn: &mut Connection,
    config: &Config,
    typed: &str,
    user_id: &str,
    trusted: bool,
    ip_address: Option<&str>,
    now: i64,
) -> Result<Result<Device, CodeProblem>, DbError> {
    let tx = db::write_tx(conn)?;
    let pending = match find_pending(&tx, typed, now)? {
        Ok(p) => p,
        Err(problem) => return Ok(Err(problem)),
    };
    let approver_is_admin = users::find_by_id(&tx, user_id)?.is_some_and(|u| u.is_admin);
    let asked = Scope::parse(&pending.authorization.scope).unwrap_or_default();
    if asked.contains(scope::ADMIN) && !approver_is_admin {
        return Ok(Err(CodeProblem::NeedsAdmin));
    }
    if !auths::approve(&tx, &pending.authorization.id, user_id, now)? {
        return Ok(Err(CodeProblem::AlreadyUsed));
    }
    let lifetime = if trusted {
        config.trusted_device_lifetime
    } else {
        config.untrusted_device_lifetime
    };
    let expires = now + clock::ms(lifetime);
    devices::mark_verified(&tx, &pending.device.id, user_id, trusted, expires, now)?;
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
    actor: Actor<'_>,
    now: i64,
) -> Result<Result<(), CodeProblem>, DbError> {
    let tx = db::write_tx(conn)?;
    let pending = match find_pending(&tx, typed, now)? {
        Ok(p) => p,
        Err(problem) => return Ok(Err(problem)),
    };
    if !auths::deny(&tx, &pending.authorization.id, actor.user_id, now)? {
        return Ok(Err(CodeProblem::AlreadyUsed));
    }
    audit::record(
        &tx,
        now,
        actor.user_id,
        "device.deny",
        &pending.device.id,
        actor.ip_address,
        &serde_json::json!({
            "authorization_id": pending.authorization.id,
            "client_id": pending.authorization.client_id,
        }),
    )?;
    tx.commit()?;
    Ok(Ok(()))
}

/// The decision inputs of a stored authorization, for a poll by `client_id`.
fn poll_state(a: &DeviceAuthorization, client_id: &str) -> PollState {
    PollState {
        // The hash lookup found it, so the code matches; the client must too (RFC 6749 §5.2:
        // a grant "issued to another client" is invalid_grant).
        same_client: a.client_id == client_id,
        expires_at: a.expires_at,
        poll_interval_seconds: a.poll_interval_seconds,
        last_polled_at: a.last_polled_at,
        // Only this process's memory knows it (crate::polls).
        early_ms: 0,
        approved_at: a.approved_at,
        denied_at: a.denied_at,
        consumed_at: a.consumed_at,
    }
}

/// What the read half of a poll decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStep {
    /// Answer with this RFC 8628 §3.5 error; `interval` is the grown interval of a `slow_down`.
    Refuse {
        /// The error code.
        error: ErrorCode,
        /// The grown interval, for `slow_down`.
        interval: Option<i64>,
    },
    /// The code is approved: [`exchange`] it.
    Exchange,
}

/// Answers a device-code poll (RFC 8628 §3.4–3.5): [`poll_read`], then [`exchange`] when the
/// code is approved, on one connection. The token endpoint runs the two halves on different
/// paths (a read in place, the exchange in the group-commit writer).
pub fn poll(
    conn: &mut Connection,
    config: &Config,
    tracker: &PollTracker,
    device_code: &str,
    client_id: &str,
    target: Target<'_>,
    now: i64,
) -> Result<PollOutcome, DbError> {
    match poll_read(conn, tracker, device_code, client_id, now, tracker.stamp())? {
        PollStep::Refuse { error, interval } => Ok(PollOutcome::Refused { error, interval }),
        PollStep::Exchange => exchange(conn, config, device_code, client_id, target, now),
    }
}

/// The read half of a poll: a pending poll is one read plus an in-memory check
/// ([`PollTracker`]), and writes nothing (the poll time and a grown interval are written back
/// later, see [`crate::polls`]). `stamp` is [`PollTracker::stamp`] taken before this read.
pub fn poll_read(
    conn: &Connection,
    tracker: &PollTracker,
    device_code: &str,
    client_id: &str,
    now: i64,
    stamp: crate::polls::Stamp,
) -> Result<PollStep, DbError> {
    let key = crate::secrets::token_key(device_code);
    let Some(a) = auths::find_by_device_code_hash(conn, &key)? else {
        return Ok(PollStep::Refuse {
            error: ErrorCode::InvalidGrant,
            interval: None,
        });
    };
    let state = poll_state(&a, client_id);
    // Only a code polled again within the freshness window is worth remembering: a device
    // polling at its interval would never be answered from memory, and keeping its read would
    // cost ~350 bytes per live code for nothing (issue 7: peak RSS with 100,000 codes).
    let fresh_ms = crate::polls::FRESH.as_millis() as i64;
    let polling_fast = tracker.polled_since(&a.id, now - fresh_ms);
    // Remembered under the SHA-256 alone (the key's last 32 bytes), as the token endpoint
    // looks it up before any database trip.
    let digest = <[u8; 32]>::try_from(&key[key.len() - 32..]);
    if let (true, Ok(digest)) = (polling_fast, digest) {
        tracker.remember_code(digest, &a.id, &a.user_code, &a.client_id, &state, stamp);
    }
    Ok(match tracker.decide(&a.id, &state, now) {
        // The grown interval is written back with the poll times (crate::polls).
        PollDecision::Refuse {
            error,
            new_interval,
            ..
        } => PollStep::Refuse {
            error,
            interval: new_interval,
        },
        PollDecision::Issue => PollStep::Exchange,
    })
}

/// Exchanges an approved code for tokens, in one write transaction that reads the row again
/// and consumes it conditionally, so of many simultaneous polls exactly one gets tokens; the
/// others get `invalid_grant`, as for a used code.
///
/// The device and its user are checked again (a user disabled or a device locked after
/// approval gets `access_denied`), not only at approval; so is the audience (`target`) the
/// client may have.
pub fn exchange(
    conn: &mut Connection,
    config: &Config,
    device_code: &str,
    client_id: &str,
    target: Target<'_>,
    now: i64,
) -> Result<PollOutcome, DbError> {
    let key = crate::secrets::token_key(device_code);
    let tx = db::write_tx(conn)?;
    let outcome = match auths::find_by_device_code_hash(&tx, &key)? {
        Some(a) => match poll::decide(Some(&poll_state(&a, client_id)), now) {
            PollDecision::Issue => issue(&tx, config, &a, target, now)?,
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

fn issue(
    conn: &Connection,
    config: &Config,
    a: &DeviceAuthorization,
    target: Target<'_>,
    now: i64,
) -> Result<PollOutcome, DbError> {
    let denied = PollOutcome::Refused {
        error: ErrorCode::AccessDenied,
        interval: None,
    };
    let Some(device) = devices::find(conn, &a.device_id)? else {
        return Ok(denied);
    };
    let Some(user) = crate::tokens::device_holder(conn, &device, now)? else {
        return Ok(denied);
    };
    let Some(client) = clients::find(conn, &a.client_id)? else {
        return Ok(denied);
    };
    // The client's scopes may have shrunk, or the user lost admin, since the code was issued.
    let asked = Scope::parse(&a.scope).unwrap_or_default();
    let scope = rules::effective_scope(&asked, &client.allowed_scopes, user.is_admin).to_string();
    let audience = match client
        .allowed(target.server_default)
        .audience(target.asked, device.resource.as_deref())
    {
        Ok(aud) => aud,
        Err(e) => {
            return Ok(PollOutcome::BadTarget(OAuthError::new(
                ErrorCode::InvalidTarget,
                e,
            )))
        }
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
            expires_at: now + clock::ms(config.refresh_token_lifetime),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::clients;
    use crate::domain::model::Client;

    const TARGET: Target<'static> = Target {
        asked: None,
        server_default: "https://issuer.example",
    };

    fn setup() -> (Connection, Config, String, String) {
        let mut conn = Connection::open_in_memory().unwrap();
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        db::migrate::migrate(&mut conn, std::path::Path::new(":memory:")).unwrap();
        let user = users::insert(&conn, "alice", "x", false, 0).unwrap();
        let client = Client::public_for_tests("c1", "");
        clients::insert(&conn, &client).unwrap();
        (conn, Config::default(), user.id, client.client_id)
    }

    #[test]
    fn approve_then_exchange_exactly_once() {
        let (mut conn, config, user, client) = setup();
        let t = PollTracker::default();
        let s = start(
            &mut conn,
            &config,
            &client,
            "",
            &DeviceFacts::default(),
            1000,
        )
        .unwrap();
        let code = s.device_code.0.clone();
        let p = poll(&mut conn, &config, &t, &code, &client, TARGET, 1000).unwrap();
        assert!(matches!(
            p,
            PollOutcome::Refused {
                error: ErrorCode::AuthorizationPending,
                ..
            }
        ));
        let typed = s.user_code.as_str().to_lowercase();
        let d = approve(&mut conn, &config, &typed, &user, true, None, 2000)
            .unwrap()
            .unwrap();
        assert_eq!(d.status, DeviceStatus::Verified);
        assert!(d.trusted_device);
        assert_eq!(
            approve(&mut conn, &config, &typed, &user, true, None, 2000)
                .unwrap()
                .err(),
            Some(CodeProblem::AlreadyUsed)
        );
        // Polled 1 s after the last poll, but approval is answered at once.
        let p = poll(&mut conn, &config, &t, &code, &client, TARGET, 2000).unwrap();
        let PollOutcome::Issued(g) = p else {
            panic!("{p:?}")
        };
        assert_eq!(g.user_id, user);
        let p = poll(&mut conn, &config, &t, &code, &client, TARGET, 9000).unwrap();
        assert!(matches!(
            p,
            PollOutcome::Refused {
                error: ErrorCode::InvalidGrant,
                ..
            }
        ));
    }

    #[test]
    fn locked_or_disabled_after_approval_is_denied() {
        let (mut conn, config, user, client) = setup();
        let t = PollTracker::default();
        let s = start(&mut conn, &config, &client, "", &DeviceFacts::default(), 0).unwrap();
        approve(
            &mut conn,
            &config,
            s.user_code.as_str(),
            &user,
            false,
            None,
            0,
        )
        .unwrap()
        .unwrap();
        conn.execute("UPDATE users SET disabled = 1", []).unwrap();
        let p = poll(
            &mut conn,
            &config,
            &t,
            &s.device_code.0,
            &client,
            TARGET,
            10,
        )
        .unwrap();
        assert!(matches!(
            p,
            PollOutcome::Refused {
                error: ErrorCode::AccessDenied,
                ..
            }
        ));
    }

    #[test]
    fn other_client_and_expiry() {
        let (mut conn, config, _user, client) = setup();
        let t = PollTracker::default();
        let s = start(&mut conn, &config, &client, "", &DeviceFacts::default(), 0).unwrap();
        let p = poll(
            &mut conn,
            &config,
            &t,
            &s.device_code.0,
            "someone-else",
            TARGET,
            0,
        )
        .unwrap();
        assert!(matches!(
            p,
            PollOutcome::Refused {
                error: ErrorCode::InvalidGrant,
                ..
            }
        ));
        let later = clock::ms(config.device_code_lifetime);
        let p = poll(
            &mut conn,
            &config,
            &t,
            &s.device_code.0,
            &client,
            TARGET,
            later,
        )
        .unwrap();
        assert!(matches!(
            p,
            PollOutcome::Refused {
                error: ErrorCode::ExpiredToken,
                ..
            }
        ));
        assert_eq!(
            find_pending(&conn, s.user_code.as_str(), later)
                .unwrap()
                .err(),
            Some(CodeProblem::Expired)
        );
        assert_eq!(
            deny(
                &mut conn,
                "BBBB-BBBB",
                Actor {
                    user_id: None,
                    ip_address: None
                },
                0
            )
            .unwrap()
            .err(),
            Some(CodeProblem::Unknown)
        );
    }
}
