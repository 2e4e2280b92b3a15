//! The device authorization (RFC 8628 §3.1–3.2) as a use case: the per-client cap on pending
//! codes decides in memory, the store authenticates the client and stores the codes in one
//! trip. And its approval (§3.3), by whichever front end: the device's lifetime is decided
//! here.
//!
//! The cap ([`crate::app::limits::PendingCap`]) admits the code before the trip and keeps it
//! reserved until the trip settles, so a burst of requests gets exactly the cap; when what it
//! knows must be read again, the trip reads the client's pending codes instead of issuing, and
//! the request asks the cap again.

use std::net::IpAddr;

use crate::app::limits::{Admit, Hold, PendingCap};
use crate::app::{AppState, Refused};
use crate::clock;
use crate::config::Config;
use crate::domain::model::{ClientCredentials, DeviceFacts, Started};
use crate::protocol::codes::{DeviceCode, UserCode};
use crate::protocol::grant;
use crate::store::{
    Admission, Approval, Caller, ClientAuth, NewAuthorization, PendingCode, StartOutcome,
};

/// A device authorization request, as read from the form.
pub struct AuthorizationRequest {
    /// The client's credentials (a public client sends only its id).
    pub creds: ClientCredentials,
    /// The `scope` parameter, as sent (empty when none).
    pub scope: String,
    /// What the device says about itself, where it asked from, and the resources it named.
    pub facts: DeviceFacts,
    /// The address the cap shares its places by.
    pub from: Option<IpAddr>,
}

/// A started authorization.
pub struct Authorized {
    /// The codes and the stored record.
    pub started: Started,
    /// Whether another address's oldest code was ended to make room under the cap.
    pub evicted: bool,
}

/// What the cap holds for this request's trip, given back unless the trip stored the code or
/// read the client (also when the request goes away mid-trip).
struct Held<'a> {
    cap: &'a PendingCap,
    hold: Option<Hold>,
}

impl Held<'_> {
    /// The code was stored, expiring at `expires_at` (ms).
    fn stored(mut self, expires_at: i64) {
        if let Some(Hold::Code(r)) = self.hold.take() {
            self.cap.settle(r, Some(expires_at));
        }
    }

    /// The client's pending codes were read.
    fn read(mut self, codes: &[PendingCode]) {
        if let Some(Hold::Read(t)) = self.hold.take() {
            self.cap.read(t, Some(codes));
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        match self.hold.take() {
            Some(Hold::Code(r)) => self.cap.settle(r, None),
            Some(Hold::Read(t)) => {
                self.cap.read(t, None);
            }
            Some(Hold::Nothing) | None => {}
        }
    }
}

/// Starts a device authorization: a pending device and its codes, within the client's cap.
pub async fn authorize(state: &AppState, req: AuthorizationRequest) -> Result<Authorized, Refused> {
    let cap = &state.limits.pending_codes;
    let config = &state.config;
    let client_id = req.creds.client_id.clone();
    let from = req.from;
    let now = clock::now_ms();
    // Time-ordered ids (UUIDv7: 48 bits of milliseconds, 74 random): new rows land at the right
    // edge of the primary-key indexes instead of on a random page each, so a batch of
    // authorizations dirties a few pages, not one per row per index.
    let mut next = Some(NewAuthorization {
        auth: ClientAuth {
            caller: Caller::Presented(req.creds),
            grant: grant::DEVICE_CODE,
            sign_default: None,
        },
        scope: req.scope,
        facts: req.facts,
        server_audience: state.audience.clone(),
        admission: Admission::Full,
        authorization_id: uuid::Uuid::now_v7().to_string(),
        device_id: uuid::Uuid::now_v7().to_string(),
        device_code: DeviceCode::generate(),
        user_code: UserCode::generate(),
        poll_interval_seconds: config.poll_interval.as_secs() as i64,
        expires_at: now + clock::ms(config.device_code_lifetime),
        now,
    });
    // A read of the pending codes makes the cap decide (it then knows the client, full or
    // not); the bound only stops a loop should reads keep going stale.
    for _ in 0..4 {
        let Some(mut new) = next.take() else { break };
        new.now = clock::now_ms();
        new.expires_at = new.now + clock::ms(config.device_code_lifetime);
        let (admit, hold) = cap.reserve(&client_id, from, new.now, &new.authorization_id);
        let held = Held {
            cap,
            hold: Some(hold),
        };
        new.admission = match admit {
            Admit::Yes => Admission::Issue { evict: None },
            Admit::Evict(id) => Admission::Issue { evict: Some(id) },
            Admit::Full => Admission::Full,
            Admit::Recount { addresses } => Admission::Recount {
                cap: cap.cap(),
                addresses,
            },
        };
        // Only a read comes back for another pass: the request itself goes on its last trip.
        let trip = match new.admission {
            Admission::Recount { .. } => {
                let read = new.clone();
                next = Some(new);
                read
            }
            _ => new,
        };
        match state.store.start_authorization(trip).await?? {
            StartOutcome::Started { started, evicted } => {
                held.stored(started.authorization.expires_at);
                return Ok(Authorized { started, evicted });
            }
            StartOutcome::Full => return Err(Refused::TooManyRequests(60)),
            StartOutcome::Recount(codes) => held.read(&codes),
        }
    }
    Err(Refused::TooManyRequests(60))
}

/// The approval of the code `typed` by `user_id`, now: the device becomes theirs for the
/// trusted or untrusted lifetime (`devices.*_lifetime`).
pub fn approval(
    config: &Config,
    typed: String,
    user_id: String,
    trusted: bool,
    ip_address: Option<String>,
) -> Approval {
    let lifetime = if trusted {
        config.trusted_device_lifetime
    } else {
        config.untrusted_device_lifetime
    };
    let now = clock::now_ms();
    Approval {
        typed,
        user_id,
        trusted,
        ip_address,
        device_expires: now + clock::ms(lifetime),
        for_device: None,
        now,
    }
}
