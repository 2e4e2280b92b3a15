//! The records hallpass keeps and the outcomes of what it does with them, in the words of the
//! product rather than of any database: users, clients, devices, device authorizations,
//! refresh tokens, sessions and signing keys, and what a device-flow step can answer. Every
//! storage backend reads and writes these types, and everything above the store speaks them.
//! Pure data (with a few pure methods); no I/O.

use crate::protocol::codes::{DeviceCode, UserCode};
use crate::protocol::error::{ErrorCode, OAuthError};
use crate::protocol::jwt::Algorithm;
use crate::protocol::resource;

// Users, browser sessions and clients.

/// A person who can sign in and approve devices.
#[derive(Debug, Clone, serde::Serialize)]
pub struct User {
    /// UUID.
    pub id: String,
    /// Unique, case-insensitively.
    pub username: String,
    /// The PBKDF2 hash; never serialized.
    #[serde(skip)]
    pub password_hash: String,
    /// Admins see every device authorization and may grant every scope.
    pub is_admin: bool,
    /// A disabled user can neither sign in nor keep using tokens.
    pub disabled: bool,
    /// Creation time, ms.
    pub created: i64,
    /// Last update, ms.
    pub updated: i64,
}

/// A live session and its user.
#[derive(Debug, Clone)]
pub struct Session {
    /// SHA-256 of the session id (the cookie value).
    pub id_hash: Vec<u8>,
    /// The signed-in user (enabled: a disabled user's sessions are not found).
    pub user: User,
    /// The CSRF token every form and state-changing API call of this session carries.
    pub csrf_token: String,
    /// When it stops working, ms.
    pub expires_at: i64,
}

/// An OAuth client: a kind of device software (a CLI, a TV app) that asks for codes.
#[derive(Debug, Clone)]
pub struct Client {
    /// UUID, sent by the device as `client_id`.
    pub client_id: String,
    /// Shown to the person on the approval page.
    pub name: String,
    /// SHA-256 of the secret; `None` for a public client, which cannot keep a secret.
    pub secret_hash: Option<Vec<u8>>,
    /// Grant type URIs this client may use.
    pub allowed_grants: Vec<String>,
    /// Space-separated scopes this client may request.
    pub allowed_scopes: String,
    /// The user who owns the client; `None` for clients made by an operator.
    pub owner_user_id: Option<String>,
    /// The algorithm of this client's access tokens, for resource servers that accept only
    /// some; `None` follows `oauth.signing_algorithm`.
    pub signing_algorithm: Option<Algorithm>,
    /// The `aud` of its tokens when no resource is named (RFC 9068 §3); `None` follows
    /// `oauth.audience`, else the issuer.
    pub audience: Option<String>,
    /// Resource indicators (RFC 8707) it may name besides its default audience.
    pub allowed_resources: Vec<String>,
    /// Creation time, ms.
    pub created: i64,
    /// Last update, ms.
    pub updated: i64,
}

impl Client {
    /// A confidential client authenticates with a secret.
    pub fn is_confidential(&self) -> bool {
        self.secret_hash.is_some()
    }

    /// Whether the client may use `grant`.
    pub fn allows_grant(&self, grant: &str) -> bool {
        self.allowed_grants.iter().any(|g| g == grant)
    }

    /// The algorithm its tokens are signed with, given the server's default.
    pub fn algorithm(&self, server_default: Algorithm) -> Algorithm {
        self.signing_algorithm.unwrap_or(server_default)
    }

    /// What it may name as a resource, given the server's default audience (`oauth.audience`,
    /// else the issuer).
    pub fn allowed<'a>(&'a self, server_default: &'a str) -> resource::Allowed<'a> {
        resource::Allowed {
            resources: &self.allowed_resources,
            default: self.audience.as_deref().unwrap_or(server_default),
        }
    }

    /// A public system client named "CLI" with these scopes: the unit tests' fixture.
    #[cfg(test)]
    pub fn public_for_tests(client_id: &str, allowed_scopes: &str) -> Client {
        Client {
            client_id: client_id.into(),
            name: "CLI".into(),
            secret_hash: None,
            allowed_grants: vec![],
            allowed_scopes: allowed_scopes.into(),
            owner_user_id: None,
            signing_algorithm: None,
            audience: None,
            allowed_resources: vec![],
            created: 0,
            updated: 0,
        }
    }
}

// Devices and their authorizations.

/// Where a device is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceStatus {
    /// Asked for a code; nobody has approved it yet.
    Pending,
    /// Approved; the device has not fetched its tokens yet.
    Verified,
    /// Holds tokens.
    Active,
    /// Locked by its owner or an admin: every token fails until unlocked.
    Locked,
}

impl DeviceStatus {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceStatus::Pending => "pending",
            DeviceStatus::Verified => "verified",
            DeviceStatus::Active => "active",
            DeviceStatus::Locked => "locked",
        }
    }

    /// The status of its stored text (an unknown text reads as pending).
    pub fn parse(s: &str) -> DeviceStatus {
        match s {
            "verified" => DeviceStatus::Verified,
            "active" => DeviceStatus::Active,
            "locked" => DeviceStatus::Locked,
            _ => DeviceStatus::Pending,
        }
    }
}

/// A device (ZenML's "OAuth2 authorized device").
#[derive(Debug, Clone)]
pub struct Device {
    /// UUID.
    pub id: String,
    /// The client the device runs.
    pub client_id: String,
    /// The approving user; `None` while pending.
    pub user_id: Option<String>,
    /// Display name, from the device (`device_name`) or its owner.
    pub name: Option<String>,
    /// See [`DeviceStatus`].
    pub status: DeviceStatus,
    /// Approved with "trust this device": the longer lifetime.
    pub trusted_device: bool,
    /// After this (ms) the device and all its tokens are dead.
    pub expires: i64,
    /// Reported by the device.
    pub os: Option<String>,
    /// The address the device asked from.
    pub ip_address: Option<String>,
    /// Reported by the device.
    pub hostname: Option<String>,
    /// Location, where configured.
    pub city: Option<String>,
    /// Location, where configured.
    pub region: Option<String>,
    /// Location, where configured.
    pub country: Option<String>,
    /// Last token issue or refresh, ms.
    pub last_login: Option<i64>,
    /// A JSON object: the User-Agent, and whatever the owner sets.
    pub device_metadata: String,
    /// Failed attempts against this device's code.
    pub failed_auth_attempts: i64,
    /// The RFC 8707 resources named at its device authorization, which every access token of
    /// its grant is for (`None`: none named; see [`crate::protocol::resource`]).
    pub resource: Option<Vec<String>>,
    /// Creation time, ms.
    pub created: i64,
    /// Last update, ms.
    pub updated: i64,
}

/// Which devices a listing returns; `None` fields do not filter.
#[derive(Debug, Default, Clone)]
pub struct DeviceFilter {
    /// Only this user's devices.
    pub user_id: Option<String>,
    /// Only devices in this status.
    pub status: Option<DeviceStatus>,
    /// Only trusted (or untrusted) devices.
    pub trusted_device: Option<bool>,
    /// Only devices of this client.
    pub client_id: Option<String>,
}

/// One device authorization.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DeviceAuthorization {
    /// UUID.
    pub id: String,
    /// Creation time, ms.
    pub created_at: i64,
    /// The client that asked.
    pub client_id: String,
    /// The pending device created with it.
    pub device_id: String,
    /// Normalized user code (no dash).
    pub user_code: String,
    /// Requested scope, canonical form.
    pub scope: String,
    /// When the codes stop working, ms.
    pub expires_at: i64,
    /// The current minimum poll interval; grows on `slow_down`.
    pub poll_interval_seconds: i64,
    /// The latest poll, ms.
    pub last_polled_at: Option<i64>,
    /// Who approved.
    pub approved_by_account_id: Option<String>,
    /// When it was approved, ms.
    pub approved_at: Option<i64>,
    /// When it was denied, ms.
    pub denied_at: Option<i64>,
    /// When tokens were issued for it, ms.
    pub consumed_at: Option<i64>,
}

/// The lifecycle state of an authorization, derived from its timestamps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthorizationState {
    /// Live and undecided.
    Pending,
    /// Approved, tokens not yet fetched.
    Approved,
    /// Denied.
    Denied,
    /// Tokens were issued.
    Consumed,
    /// Past `expires_at` without being consumed or denied.
    Expired,
}

impl AuthorizationState {
    /// Parses a `state` filter value.
    pub fn parse(s: &str) -> Option<AuthorizationState> {
        Some(match s {
            "pending" => AuthorizationState::Pending,
            "approved" => AuthorizationState::Approved,
            "denied" => AuthorizationState::Denied,
            "consumed" => AuthorizationState::Consumed,
            "expired" => AuthorizationState::Expired,
            _ => return None,
        })
    }
}

/// Which authorizations a listing shows: one state, the live ones (pending or approved, not
/// yet exchanged), or all that are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listing {
    /// Pending or approved, not consumed, not expired: what an admin can still act on.
    Live,
    /// One state.
    Only(AuthorizationState),
    /// Every stored row (expired ones stay until the reaper takes them).
    All,
}

/// How many stored authorizations are in each state. The states partition the rows: a row is
/// denied, consumed, live (pending or approved) or expired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StateCounts {
    /// Live and undecided.
    pub pending: u64,
    /// Approved, not yet exchanged, live.
    pub approved: u64,
    /// Denied.
    pub denied: u64,
    /// Exchanged for tokens.
    pub consumed: u64,
    /// Expired without being exchanged or denied.
    pub expired: u64,
}

impl StateCounts {
    /// The number in a listing.
    pub fn of(&self, listing: Listing) -> u64 {
        match listing {
            Listing::Live => self.pending + self.approved,
            Listing::All => {
                self.pending + self.approved + self.denied + self.consumed + self.expired
            }
            Listing::Only(AuthorizationState::Pending) => self.pending,
            Listing::Only(AuthorizationState::Approved) => self.approved,
            Listing::Only(AuthorizationState::Denied) => self.denied,
            Listing::Only(AuthorizationState::Consumed) => self.consumed,
            Listing::Only(AuthorizationState::Expired) => self.expired,
        }
    }
}

/// One authorization with what an admin needs to tell it from the others: its device's facts,
/// its client's name and the user who approved it (or owns the device).
#[derive(Debug, Clone)]
pub struct Overview {
    /// The authorization.
    pub authorization: DeviceAuthorization,
    /// The client's name.
    pub client_name: Option<String>,
    /// What the device calls itself.
    pub device_name: Option<String>,
    /// Reported by the device.
    pub os: Option<String>,
    /// Reported by the device.
    pub hostname: Option<String>,
    /// The address the device asked from.
    pub ip_address: Option<String>,
    /// Location of that address, where known.
    pub city: Option<String>,
    /// Location of that address, where known.
    pub region: Option<String>,
    /// Location of that address, where known.
    pub country: Option<String>,
    /// Who approved or denied it, else who owns the device.
    pub username: Option<String>,
}

/// A device's location; each part only where known.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Location {
    /// City name (English).
    pub city: Option<String>,
    /// Largest subdivision: state, province, region (English).
    pub region: Option<String>,
    /// Country name (English), or its ISO code when the name is missing.
    pub country: Option<String>,
}

// Refresh tokens and signing keys.

/// A stored refresh token.
#[derive(Debug, Clone)]
pub struct RefreshToken {
    /// The device it belongs to.
    pub device_id: String,
    /// Its rotation family.
    pub family: String,
    /// Granted scope.
    pub scope: String,
    /// Issue time, ms.
    pub created_at: i64,
    /// Expiry, ms.
    pub expires_at: i64,
    /// Set once it was exchanged for a new one; a second use is theft.
    pub used_at: Option<i64>,
    /// Set when its family was revoked.
    pub revoked_at: Option<i64>,
}

/// A key as listed by `hallpass keys list`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KeyInfo {
    /// RFC 7638 thumbprint.
    pub kid: String,
    /// `RS256`, `ES256` or `EdDSA`.
    pub algorithm: String,
    /// Creation time, ms.
    pub created: i64,
    /// When it started signing, ms; `None` for a key on standby.
    pub activated: Option<i64>,
    /// When it stopped signing, ms.
    pub retired: Option<i64>,
    /// Whether its private key is sealed (see [`crate::sealing`]).
    pub sealed: bool,
}

/// What sealing every stored key anew did (`Store::reseal_keys`).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Resealed {
    /// Keys sealed anew with the first secret (plain ones, and ones sealed with an older one).
    pub resealed: Vec<String>,
    /// Keys already sealed with the first secret, left as they were.
    pub unchanged: Vec<String>,
}

/// What became of an imported key.
#[derive(Debug, PartialEq, Eq)]
pub enum Imported {
    /// Stored and signing; the key it replaced, if any, is retired.
    Active {
        /// The retired key's kid.
        retired: Option<String>,
    },
    /// Stored on standby: published, not signing (until activated).
    Standby,
    /// A key with this kid (the same public key) is already stored.
    Duplicate,
}

/// What activating a key on standby did (`Store::activate_key`).
#[derive(Debug, PartialEq, Eq)]
pub enum Activation {
    /// The key signs now; the key of its algorithm that did, if any, is retired.
    Activated {
        /// The key's algorithm.
        algorithm: String,
        /// The retired key's kid.
        retired: Option<String>,
    },
    /// It was already the active key.
    AlreadyActive,
    /// A retired key never signs again (its retirement started its way out of the JWKS).
    Retired,
    /// No such key.
    NotFound,
}

// The device flow's steps and who takes them.

/// What a device tells us about itself when it asks for a code.
#[derive(Debug, Default, Clone)]
pub struct DeviceFacts {
    /// `device_name`, shown on the approval page.
    pub name: Option<String>,
    /// `os`.
    pub os: Option<String>,
    /// `hostname`.
    pub hostname: Option<String>,
    /// The address of the connection (or the trusted proxy's client address).
    pub ip_address: Option<String>,
    /// The request's User-Agent, kept in the device metadata.
    pub user_agent: Option<String>,
    /// Where the request came from, where known.
    pub location: Location,
    /// The RFC 8707 resources the request named (the caller checked them against the client):
    /// every access token of the grant is for them (see [`crate::protocol::resource`]).
    pub resource: Option<Vec<String>>,
}

/// What a token request asks of the `aud` claim: its RFC 8707 `resource` parameters, and the
/// server's default audience (`oauth.audience`, else the issuer) for a client without its own.
#[derive(Debug, Clone)]
pub struct Target {
    /// The request's resources, checked as URIs; `None` when it named none.
    pub asked: Option<Vec<String>>,
    /// The default audience of clients without their own.
    pub server_default: std::sync::Arc<str>,
}

/// A started authorization: the codes go to the device, once.
#[derive(Debug)]
pub struct Started {
    /// The secret the device polls with.
    pub device_code: DeviceCode,
    /// The code the person types.
    pub user_code: UserCode,
    /// The stored record.
    pub authorization: DeviceAuthorization,
}

/// Why a user code cannot be acted on. The wording never says whether some other code exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodeProblem {
    /// No stored code matches (or the text cannot be a code).
    #[error("this code is not valid; check it and try again")]
    Unknown,
    /// The code expired.
    #[error("this code has expired; ask the device for a new one")]
    Expired,
    /// Someone already approved it, or it was already exchanged for tokens.
    #[error("this code has already been used")]
    AlreadyUsed,
    /// Someone denied it.
    #[error("this code was denied")]
    Denied,
    /// The device asks for the `admin` scope and the approver is not an admin.
    #[error("this device asks for administrator access, which only an administrator can approve")]
    NeedsAdmin,
}

/// A live, undecided authorization looked up by user code, with what the approval page shows.
#[derive(Debug, Clone)]
pub struct Pending {
    /// The authorization.
    pub authorization: DeviceAuthorization,
    /// Its pending device.
    pub device: Device,
}

/// What became of a user code presented for one named device (ZenML's verify-by-device).
#[derive(Debug, PartialEq, Eq)]
pub enum DeviceCodeCheck {
    /// The code is this device's live code: go on and approve it.
    Matches,
    /// The device has no live, undecided code (or does not exist).
    NoPendingCode,
    /// Wrong code; `remaining` more wrong codes before the device is locked.
    Wrong { remaining: u32 },
    /// Wrong code, and that was the last allowed: the device is now locked and its code
    /// denied, so a guesser gains nothing by going on.
    Locked,
}

/// Tokens to mint after a successful exchange. The refresh token is already stored (hashed).
#[derive(Debug)]
pub struct Grant {
    /// The user the device acts for.
    pub user_id: String,
    /// The device.
    pub device_id: String,
    /// Granted scope.
    pub scope: String,
    /// The access token's audience (RFC 9068 §2.2), never empty.
    pub audience: Vec<String>,
    /// The new refresh token, in clear, to send once.
    pub refresh_token: String,
}

/// The answer to one poll.
#[derive(Debug)]
pub enum PollOutcome {
    /// Tokens were issued; the code is now consumed.
    Issued(Grant),
    /// An RFC 8628 §3.5 error; `interval` is the code's current interval after a `slow_down`.
    Refused {
        /// The error code.
        error: ErrorCode,
        /// The grown interval, for `slow_down`.
        interval: Option<i64>,
    },
    /// The code is approved, but the request's `resource` is not one the grant covers
    /// (`invalid_target`, RFC 8707 §2); the code is not consumed, so a corrected request works.
    BadTarget(OAuthError),
}

/// Who acts and from where, for the audit record.
#[derive(Debug, Clone, Default)]
pub struct Actor {
    /// The acting user; `None` for the command line.
    pub user_id: Option<String>,
    /// The request's address; `None` for the command line.
    pub ip_address: Option<String>,
}

/// Client credentials as presented (RFC 6749 §2.3.1), not yet checked.
#[derive(Debug, Clone)]
pub struct ClientCredentials {
    /// `client_id`.
    pub client_id: String,
    /// `client_secret`, if any.
    pub secret: Option<String>,
}
