//! What the store's methods take and give: one request type per transaction that needs more
//! than a few arguments, and the outcomes a transaction can have. Backend-neutral; the records
//! themselves are in [`crate::domain::model`].

use std::sync::Arc;

use crate::domain::model::{
    Actor, Client, ClientCredentials, CodeProblem, Device, DeviceAuthorization, DeviceFacts, Grant,
    Overview, Pending, PollOutcome, RefreshToken, Started, StateCounts, Target, User,
};
use crate::protocol::codes::{DeviceCode, UserCode};
use crate::protocol::error::OAuthError;
use crate::protocol::jwt::{AccessClaims, Algorithm, Verified};
use crate::protocol::scope::Scope;

/// Who a token-endpoint request says it is. Checked in the same transaction as the work it asks
/// for: the hot paths make one trip to the store per request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// A client read and authenticated a moment ago (remembered by the caller): not read again.
    Known(Arc<Client>),
    /// Credentials as presented: the client is read and the credentials checked.
    Presented(ClientCredentials),
    /// No credentials and no `client_id`, on a refresh: the client the refresh token was issued
    /// to, which must be public (RFC 6749 §6).
    RefreshTokenOwner(String),
}

/// A client to authenticate for one grant type, and the signing algorithm whose active key to
/// read in the same trip when the work ends in a token (`None`: no token to sign).
#[derive(Debug, Clone)]
pub struct ClientAuth {
    /// Who the request says it is.
    pub caller: Caller,
    /// The grant type the client must be allowed.
    pub grant: &'static str,
    /// The server's default signing algorithm: the active key of the client's algorithm is
    /// read when the work succeeds, so a cached signer is confirmed without another trip.
    pub sign_default: Option<Algorithm>,
}

/// The active key of an algorithm, as the store saw it in the trip of a grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveKey {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// Its active key's id, `None` when it has none (revoked meanwhile).
    pub kid: Option<String>,
}

/// An authenticated client, as a grant's trip found it.
#[derive(Debug, Clone)]
pub struct ClientRead {
    /// The client.
    pub client: Arc<Client>,
    /// Whether it was read from the store in this trip (and may be remembered under the stamp
    /// taken before it), rather than known already.
    pub fresh: bool,
    /// The active key of the client's algorithm, when the trip read it.
    pub key: Option<ActiveKey>,
}

/// What was decided, in memory, about the per-client cap on pending codes before the trip that
/// starts an authorization (see `app::limits::PendingCap`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Under the cap: issue; first end this pending authorization (by id), if given, to make
    /// room. An authorization that was decided or expired meanwhile is left alone.
    Issue {
        /// The authorization to end first.
        evict: Option<String>,
    },
    /// At the cap: refuse (after the client is authenticated, so a wrong client hears so).
    Full,
    /// What is known must be read again first: answer the client's pending codes (at most
    /// `cap`, earliest expiry first) instead of issuing. Without `addresses`, each code's
    /// address is read only if the client turns out to hold `cap` codes.
    Recount {
        /// The most codes to read.
        cap: usize,
        /// Whether to read each code's device address in any case.
        addresses: bool,
    },
}

/// A device authorization to start (RFC 8628 §3.1–3.2), with everything decided before the
/// trip: ids, the device code, times, and the admission.
#[derive(Debug, Clone)]
pub struct NewAuthorization {
    /// The client asking.
    pub auth: ClientAuth,
    /// The `scope` parameter as sent (checked against the client in the trip).
    pub scope: String,
    /// What the device says about itself, and where it asked from.
    pub facts: DeviceFacts,
    /// The server's default audience, for checking the `resource`s named in `facts`.
    pub server_audience: Arc<str>,
    /// The cap's decision.
    pub admission: Admission,
    /// The new authorization's id (UUIDv7).
    pub authorization_id: String,
    /// The new pending device's id (UUIDv7).
    pub device_id: String,
    /// The secret the device will poll with.
    pub device_code: DeviceCode,
    /// The user code to store, unless a stored row (live or not yet reaped) or another
    /// authorization of the same batch has it: then the store draws others until one is free.
    pub user_code: UserCode,
    /// The poll interval it starts with, seconds.
    pub poll_interval_seconds: i64,
    /// When the codes stop working, ms.
    pub expires_at: i64,
    /// Now, ms.
    pub now: i64,
}

/// One pending code of a client, read for the cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCode {
    /// The authorization id.
    pub id: String,
    /// When it expires, ms.
    pub expires_at: i64,
    /// The address its device asked from, when read.
    pub ip_address: Option<String>,
}

/// What became of a [`NewAuthorization`] whose client passed.
// Returned once per call and moved, never kept in bulk: boxing the large variant would cost
// an allocation per request on a hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum StartOutcome {
    /// Issued; `evicted` says whether the code to evict was ended.
    Started {
        /// The new authorization and its codes.
        started: Started,
        /// Whether [`Admission::Issue`]'s code was ended.
        evicted: bool,
    },
    /// [`Admission::Full`].
    Full,
    /// [`Admission::Recount`]: the client's pending codes; nothing was issued.
    Recount(Vec<PendingCode>),
}

/// A poll's read: the client, and the authorization the device code names (any state, or
/// none).
#[derive(Debug)]
pub struct PollRead {
    /// The authenticated client.
    pub client: ClientRead,
    /// The authorization of the device code, if it exists.
    pub authorization: Option<DeviceAuthorization>,
    /// The code's last judged poll as every instance sharing the database saw it (PostgreSQL's
    /// `poll_state`), when it is known there; `None` on SQLite, whose one process keeps it in
    /// memory (`app::polls`).
    pub shared: Option<PollMark>,
}

/// A judged poll of an authorization, shared between instances so that `slow_down` holds
/// across them (RFC 8628 §3.5): the fields of [`crate::protocol::poll::PollState`] a poll
/// changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollMark {
    /// The authorization.
    pub id: String,
    /// When it was polled, ms.
    pub last_polled_at: i64,
    /// How early that poll came ([`crate::protocol::poll::PollState::early_ms`]).
    pub early_ms: i64,
    /// The interval after it (grown by a `slow_down`).
    pub poll_interval_seconds: i64,
    /// When the code expires (for reaping the mark).
    pub expires_at: i64,
}

/// The exchange of an approved device code for tokens: the write half of a poll.
#[derive(Debug, Clone)]
pub struct Exchange {
    /// The device code as presented.
    pub device_code: String,
    /// The client polling (authenticated by the read half).
    pub client_id: String,
    /// The client's signing algorithm: its active key is read in the same trip when tokens
    /// are issued.
    pub algorithm: Algorithm,
    /// What the access token is for.
    pub target: Target,
    /// When the new refresh token expires, ms.
    pub refresh_expires_at: i64,
    /// Now, ms.
    pub now: i64,
}

/// What an [`Exchange`] gave.
#[derive(Debug)]
pub struct Exchanged {
    /// Tokens, or why not.
    pub outcome: PollOutcome,
    /// The active key of the client's algorithm, read when tokens were issued.
    pub key: Option<ActiveKey>,
}

/// A refresh-token rotation (RFC 6749 §6).
#[derive(Debug, Clone)]
pub struct Refresh {
    /// The client.
    pub auth: ClientAuth,
    /// The refresh token as presented.
    pub token: String,
    /// A narrower `scope`, if asked.
    pub scope: Option<Scope>,
    /// What the access token is for.
    pub target: Target,
    /// The request's address, for the audit record of a reuse.
    pub ip_address: Option<String>,
    /// When the new refresh token expires, ms.
    pub refresh_expires_at: i64,
    /// Now, ms.
    pub now: i64,
}

/// What a [`Refresh`] whose client passed gave.
#[derive(Debug)]
pub struct Refreshed {
    /// The client.
    pub client: Arc<Client>,
    /// The new grant, or why the token was refused.
    pub grant: Result<Grant, OAuthError>,
    /// The active key of the client's algorithm, read when a grant was made.
    pub key: Option<ActiveKey>,
}

/// An RFC 7009 revocation by an authenticated client.
#[derive(Debug, Clone)]
pub struct Revocation {
    /// The token as presented.
    pub token: String,
    /// `token_type_hint`.
    pub hint: Option<String>,
    /// The client revoking; tokens of other clients are left alone.
    pub client_id: String,
    /// Now, ms.
    pub now: i64,
    /// How long a retired key stays published (the access-token lifetime), ms.
    pub grace_ms: i64,
}

/// An RFC 7662 introspection, with the client's credentials checked in the same trip.
#[derive(Clone)]
pub struct Introspect {
    /// The resource server's credentials (a confidential client).
    pub creds: ClientCredentials,
    /// The `token` parameter, if sent.
    pub token: Option<String>,
    /// Tokens verified before, to spare their signature check.
    pub verified: Arc<Verified>,
    /// How long a retired key stays published (the access-token lifetime), ms.
    pub grace_ms: i64,
    /// Now, ms.
    pub now: i64,
}

/// What an introspected token is now.
// Returned once per call and moved, never kept in bulk: boxing the large variant would cost
// an allocation per request on a hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Introspection {
    /// Not currently valid, for whatever reason.
    Inactive,
    /// A live access token; `user` is its device's holder (`None` for a client's own token).
    Access {
        /// Its claims.
        claims: AccessClaims,
        /// Who it acts for.
        user: Option<User>,
    },
    /// A live refresh token, its device and the device's holder.
    Refresh {
        /// The stored token.
        token: RefreshToken,
        /// Its device.
        device: Device,
        /// The device's holder.
        user: User,
    },
}

/// A live access token presented as a bearer (the management API): its claims and who it acts
/// for (`None` for a client's own token).
pub type Bearer = (AccessClaims, Option<User>);

/// A typed user code, looked up for the person about to decide it.
// Returned once per call and moved, never kept in bulk: boxing the large variant would cost
// an allocation per request on a hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum CodeLookup {
    /// Live and undecided, with its client's name.
    Pending {
        /// The authorization and its device.
        pending: Pending,
        /// The client's name.
        client_name: Option<String>,
    },
    /// Why it cannot be decided; and when the viewer approved it, if they did.
    Problem {
        /// Why not.
        problem: CodeProblem,
        /// When the person looking approved this very code.
        approved_by_viewer: Option<i64>,
    },
}

/// An approval of a typed code by a user (the page, the API, the command line).
#[derive(Debug, Clone)]
pub struct Approval {
    /// The code as typed.
    pub typed: String,
    /// The approving user.
    pub user_id: String,
    /// "Trust this device".
    pub trusted: bool,
    /// The approver's address, for the audit record.
    pub ip_address: Option<String>,
    /// When the approved device expires (its trusted or untrusted lifetime from now), ms.
    pub device_expires: i64,
    /// ZenML's verify-by-device: the device the code must belong to, and after how many wrong
    /// codes that device is locked (RFC 8628 §5.1).
    pub for_device: Option<(String, u32)>,
    /// Now, ms.
    pub now: i64,
}

/// Why an [`Approval`] did not approve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApprovalRefused {
    /// The code's own problem.
    Code(CodeProblem),
    /// The named device has no live, undecided code (or does not exist).
    NoPendingCode,
    /// Wrong code for the named device; `remaining` more before it is locked.
    Wrong {
        /// Wrong codes left.
        remaining: u32,
    },
    /// Wrong code, the last allowed: the device is locked and its code denied.
    Locked,
}

/// A change to a device by its owner or an admin; `None` leaves a part as it is.
#[derive(Debug, Clone, Default)]
pub struct DeviceUpdate {
    /// The device.
    pub id: String,
    /// Only this user's device (`None`: anyone's, for an admin or the command line).
    pub owner: Option<String>,
    /// A new name (`Some(None)`: none).
    pub name: Option<Option<String>>,
    /// New metadata (a JSON object's text).
    pub metadata: Option<String>,
    /// Lock or unlock.
    pub locked: Option<bool>,
    /// Who acts, for the audit record of a lock.
    pub actor: Actor,
    /// Now, ms.
    pub now: i64,
}

/// Why a [`DeviceUpdate`] changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceRefused {
    /// No such device for that owner.
    NotFound,
    /// A pending device cannot be locked or unlocked (its code can be denied instead).
    Pending,
}

/// A user's devices, with each client's name, for the person's page.
#[derive(Debug, Clone)]
pub struct DevicesOf {
    /// Newest first.
    pub devices: Vec<Device>,
    /// The name of each client of those devices, `None` for a deleted one.
    pub client_names: std::collections::HashMap<String, Option<String>>,
}

/// One page of the admins' authorization listing.
#[derive(Debug, Clone)]
pub struct AuthorizationsPage {
    /// How many authorizations are in each state.
    pub counts: StateCounts,
    /// The rows of the page shown.
    pub rows: Vec<Overview>,
    /// Every client, for the filter.
    pub clients: Vec<Client>,
    /// The page shown, 1-based: the one asked for, or the last one when it asked past the end.
    pub page: u32,
}

/// A user to create, already checked and with the password hashed.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// The name, checked.
    pub username: String,
    /// The password's PBKDF2 hash.
    pub password_hash: String,
    /// Admin or not.
    pub is_admin: bool,
    /// Now, ms.
    pub now: i64,
}

/// A change to a user, with a new password already hashed; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct UserUpdate {
    /// Grant or remove admin.
    pub is_admin: Option<bool>,
    /// Disable or enable.
    pub disabled: Option<bool>,
    /// A new password's hash (signs every browser of the user out).
    pub password_hash: Option<String>,
}

/// A browser session to store.
#[derive(Debug, Clone)]
pub struct NewSession {
    /// SHA-256 of the session id.
    pub id_hash: Vec<u8>,
    /// The signed-in user.
    pub user_id: String,
    /// Its CSRF token.
    pub csrf_token: String,
    /// Now, ms.
    pub now: i64,
    /// When it stops working, ms.
    pub expires_at: i64,
}

/// The kinds of rows the reaper deletes once expired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Device authorizations.
    Authorizations,
    /// Refresh tokens.
    RefreshTokens,
    /// Devices (with their remaining tokens).
    Devices,
    /// Revocation records of access tokens that have expired anyway.
    Revocations,
    /// Browser sessions.
    Sessions,
}

/// A poll time remembered in memory, to write back: authorization id, when it was polled (ms),
/// and the interval grown from memory, if it grew.
pub type PollTime = (String, i64, Option<i64>);
