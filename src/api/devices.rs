//! `/api/v1/devices`: ZenML's authorized-devices API, with its field names. A device that is not
//! the caller's is a 404, never a 403, so ids cannot be probed. Admins may see and manage every
//! user's devices.

use hyper::StatusCode;

use super::{is_uuid, ok, opt_bool, opt_string, page, query, read_object, Caller};
use crate::app::limits::{user_key, CodeEntry, Guesser};
use crate::app::AppState;
use crate::clock;
use crate::domain::model::{Actor, CodeProblem, Device, DeviceFilter, DeviceStatus};
use crate::http::{rfc3339, Error, Request, Response};
use crate::protocol::codes::UserCode;
use crate::store::{ApprovalRefused as Refused, CodeLookup, DeviceRefused, DeviceUpdate};

/// Largest serialized `device_metadata` accepted.
const MAX_METADATA: usize = 4096;

/// ZenML's device response, plus `device_metadata`.
pub fn device_json(d: &Device) -> serde_json::Value {
    let metadata: serde_json::Value =
        serde_json::from_str(&d.device_metadata).unwrap_or_else(|_| serde_json::json!({}));
    serde_json::json!({
        "id": d.id,
        "name": d.name,
        "created": rfc3339(d.created),
        "updated": rfc3339(d.updated),
        "user_id": d.user_id,
        "client_id": d.client_id,
        "expires": rfc3339(d.expires),
        "trusted_device": d.trusted_device,
        "status": d.status,
        "os": d.os,
        "ip_address": d.ip_address,
        "hostname": d.hostname,
        "city": d.city,
        "region": d.region,
        "country": d.country,
        "last_login": d.last_login.map(rfc3339),
        "device_metadata": metadata,
    })
}

/// `GET /api/v1/devices`: a page of devices with `total`. Filters: `status`, `trusted_device`,
/// `client_id`; admins may add `user_id`, and without it see every user's devices.
pub async fn list(state: AppState, caller: Caller, req: Request) -> Result<Response, Error> {
    let user = caller.device_user()?;
    let q = query(&req)?;
    let (offset, limit) = page(&q)?;
    let status = match q.get("status").map(String::as_str) {
        None => None,
        Some("pending") => Some(DeviceStatus::Pending),
        Some("verified") => Some(DeviceStatus::Verified),
        Some("active") => Some(DeviceStatus::Active),
        Some("locked") => Some(DeviceStatus::Locked),
        Some(_) => {
            return Err(Error::bad_request(
                "status",
                "`status` must be pending, verified, active or locked",
            ))
        }
    };
    let trusted_device = match q.get("trusted_device").map(String::as_str) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => {
            return Err(Error::bad_request(
                "trusted_device",
                "`trusted_device` must be true or false",
            ))
        }
    };
    let user_id = match q.get("user_id") {
        Some(u) if caller.is_admin() => Some(u.clone()),
        Some(u) if *u == user.id => Some(u.clone()),
        Some(_) => {
            return Err(Error::Forbidden(
                "only an admin may list another user's devices".into(),
            ))
        }
        None if caller.is_admin() => None,
        None => Some(user.id.clone()),
    };
    let filter = DeviceFilter {
        user_id,
        status,
        trusted_device,
        client_id: q.get("client_id").cloned(),
    };
    let (items, total) = state.store.devices(filter, offset, limit).await?;
    ok(
        StatusCode::OK,
        serde_json::json!({
            "items": items.iter().map(device_json).collect::<Vec<_>>(),
            "total": total,
            "offset": offset,
            "limit": limit,
        }),
    )
}

/// The owner filter for a caller: admins manage any device.
fn owner(caller: &Caller) -> Result<Option<String>, Error> {
    let user = caller.device_user()?;
    Ok((!caller.is_admin()).then(|| user.id.clone()))
}

fn not_found() -> Error {
    Error::NotFound("no such device")
}

/// `GET /api/v1/devices/{device_id_or_user_code}`: by id for its owner; by user code for any
/// signed-in user while the device is pending and unclaimed (how an approval step looks a
/// device up before approving it).
pub async fn get(state: AppState, caller: Caller, key: String) -> Result<Response, Error> {
    let owner = owner(&caller)?;
    let by_code = !is_uuid(&key);
    if by_code {
        // Neither an id nor a code: nothing to look up, and no guess to count.
        if UserCode::parse(&key).is_none() {
            return Err(not_found());
        }
    }
    let entry = match by_code {
        true => Some(enter_code(&state, &caller).await?),
        false => None,
    };
    let found = if by_code {
        match state.store.look_up_code(key, None, clock::now_ms()).await? {
            CodeLookup::Pending { pending, .. } => Some(pending.device),
            CodeLookup::Problem { .. } => None,
        }
    } else {
        state.store.device(key, owner).await?
    };
    match found {
        Some(device) => {
            if let Some(entry) = entry {
                entry.not_a_guess().await;
            }
            ok(StatusCode::OK, device_json(&device))
        }
        None => Err(not_found()),
    }
}

/// Who enters a code, for the guessing limits: the address, and the browser session or (for a
/// bearer token) the user.
fn guesser(caller: &Caller) -> Guesser {
    Guesser {
        addr: caller.addr,
        session: caller.session.as_ref().map(|(key, _)| *key),
        user: caller.user.as_ref().map(|u| user_key(&u.id)),
    }
}

/// Reserves one failed user-code entry for the caller before the lookup (RFC 8628 §5.1;
/// shared with the approval page, see [`crate::app::limits::Limits::enter_code`]): 429 once the
/// address, the session or the user has used up its entries.
async fn enter_code<'s>(state: &'s AppState, caller: &Caller) -> Result<CodeEntry<'s>, Error> {
    state
        .limits
        .enter_code(&state.store, guesser(caller))
        .await
        .map_err(Error::TooManyRequests)
}

/// `PUT /api/v1/devices/{device_id}`: `{name, device_metadata, locked}`, each optional.
pub async fn update(
    state: AppState,
    caller: Caller,
    req: Request,
    id: String,
) -> Result<Response, Error> {
    let owner = owner(&caller)?;
    let body = read_object(&state, req, &["name", "device_metadata", "locked"]).await?;
    let name = opt_string(&body, "name", 100, true)?;
    let metadata = match body.get("device_metadata") {
        None | Some(serde_json::Value::Null) => None,
        Some(v @ serde_json::Value::Object(_)) => {
            let text = v.to_string();
            if text.len() > MAX_METADATA {
                return Err(Error::bad_request(
                    "device_metadata",
                    format!("`device_metadata` must serialize to at most {MAX_METADATA} bytes"),
                ));
            }
            Some(text)
        }
        Some(_) => {
            return Err(Error::bad_request(
                "device_metadata",
                "`device_metadata` must be a JSON object",
            ))
        }
    };
    let locked = opt_bool(&body, "locked")?;
    if !is_uuid(&id) {
        return Err(not_found());
    }
    let update = DeviceUpdate {
        id,
        owner,
        name,
        metadata,
        locked,
        actor: Actor {
            user_id: caller.user_id().map(str::to_string),
            ip_address: caller.ip.clone(),
        },
        now: clock::now_ms(),
    };
    let device = match state.store.update_device(update).await? {
        Ok(device) => device,
        Err(DeviceRefused::NotFound) => return Err(not_found()),
        Err(DeviceRefused::Pending) => {
            return Err(Error::Conflict(
                "a pending device cannot be locked or unlocked; deny its code instead".into(),
            ))
        }
    };
    ok(StatusCode::OK, device_json(&device))
}

/// `DELETE /api/v1/devices/{device_id}`: removes the device and revokes its tokens.
pub async fn delete(state: AppState, caller: Caller, id: String) -> Result<Response, Error> {
    let owner = owner(&caller)?;
    if !is_uuid(&id) {
        return Err(not_found());
    }
    let actor = Actor {
        user_id: caller.user_id().map(str::to_string),
        ip_address: caller.ip.clone(),
    };
    let removed_id = id.clone();
    let removed = state
        .store
        .remove_device(id, owner, actor, clock::now_ms())
        .await?;
    if !removed {
        return Err(not_found());
    }
    ok(
        StatusCode::OK,
        serde_json::json!({ "id": removed_id, "deleted": true }),
    )
}

/// `PUT /api/v1/devices/verify`: `{user_code, trusted_device}` — approve a pending device as the
/// caller, the JSON twin of the approval page.
pub async fn verify(state: AppState, caller: Caller, req: Request) -> Result<Response, Error> {
    let user = caller.device_user()?.clone();
    let body = read_object(&state, req, &["user_code", "trusted_device", "device_id"]).await?;
    let code = opt_string(&body, "user_code", 64, false)?
        .flatten()
        .ok_or_else(|| Error::bad_request("user_code", "`user_code` is required"))?;
    let trusted = opt_bool(&body, "trusted_device")?.unwrap_or(false);
    let device_id = opt_string(&body, "device_id", 64, false)?.flatten();
    // A malformed code cannot match anything: said plainly, and not counted as a guess.
    if let Some(problem) = UserCode::shape_problem(&code) {
        return Err(Error::bad_request("user_code", problem));
    }
    let entry = enter_code(&state, &caller).await?;
    let typed = code.clone();
    let mut approval =
        crate::app::authorize::approval(&state.config, code, user.id, trusted, caller.ip.clone());
    // ZenML's verify names the device: a wrong code then counts against that device, which is
    // locked after oauth.max_failed_code_attempts.
    approval.for_device = device_id.map(|id| (id, state.config.max_failed_code_attempts));
    let result = state.store.approve(approval).await?;
    let problem = match result {
        Ok(device) => {
            entry.not_a_guess().await;
            state.polls.decided(&typed);
            state
                .metrics
                .authorization(crate::metrics::Outcome::Approved);
            return ok(StatusCode::OK, device_json(&device));
        }
        Err(p) => p,
    };
    // Refused for the approver's role, not for the code: no guess.
    if matches!(problem, Refused::Code(CodeProblem::NeedsAdmin)) {
        entry.not_a_guess().await;
    } else {
        drop(entry);
    }
    match problem {
        Refused::Code(CodeProblem::Unknown) | Refused::NoPendingCode => {
            Err(Error::NotFound("no pending device has this code"))
        }
        Refused::Code(CodeProblem::NeedsAdmin) => {
            Err(Error::Forbidden(CodeProblem::NeedsAdmin.to_string()))
        }
        Refused::Code(p) => Err(Error::Unprocessable {
            message: p.to_string(),
            field: Some("user_code".into()),
        }),
        Refused::Wrong { remaining } => Err(Error::Unprocessable {
            message: format!(
                "this is not the device's code; {remaining} more wrong codes lock the device"
            ),
            field: Some("user_code".into()),
        }),
        Refused::Locked => Err(Error::Unprocessable {
            message: "too many wrong codes for this device: it is now locked and its code denied; start a new authorization on the device".into(),
            field: Some("user_code".into()),
        }),
    }
}
