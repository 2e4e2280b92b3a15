//! OAuth error codes (RFC 6749 §5.2, RFC 8628 §3.5, RFC 7009 §2.2.1, RFC 8707 §2), as one enum so no
//! handler spells a code by hand.

use std::borrow::Cow;

use serde::Serialize;

/// An RFC 6749 §5.2 `error` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Missing, repeated or malformed parameter.
    InvalidRequest,
    /// Client authentication failed (401).
    InvalidClient,
    /// The grant (device code, refresh token) is invalid, expired, revoked or not this client's.
    InvalidGrant,
    /// The client may not use this grant type.
    UnauthorizedClient,
    /// The grant type is unknown.
    UnsupportedGrantType,
    /// The scope is unknown or not allowed for this client.
    InvalidScope,
    /// RFC 8707 §2: a `resource` is malformed, or not one the client or the grant may have.
    InvalidTarget,
    /// RFC 8628 §3.5: the person has not acted yet.
    AuthorizationPending,
    /// RFC 8628 §3.5: poll less often; the interval has grown by 5 seconds.
    SlowDown,
    /// RFC 8628 §3.5: the person denied the request.
    AccessDenied,
    /// RFC 8628 §3.5: the device code expired.
    ExpiredToken,
    /// Not an RFC code: the endpoint does not exist (404).
    NotFound,
    /// RFC 6749 §4.1.2.1: the server failed; details are logged, not sent.
    ServerError,
    /// RFC 6749 §4.1.2.1: the server is overloaded or its database is busy.
    TemporarilyUnavailable,
}

impl ErrorCode {
    /// The `error` value as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InvalidClient => "invalid_client",
            ErrorCode::InvalidGrant => "invalid_grant",
            ErrorCode::UnauthorizedClient => "unauthorized_client",
            ErrorCode::UnsupportedGrantType => "unsupported_grant_type",
            ErrorCode::InvalidScope => "invalid_scope",
            ErrorCode::InvalidTarget => "invalid_target",
            ErrorCode::AuthorizationPending => "authorization_pending",
            ErrorCode::SlowDown => "slow_down",
            ErrorCode::AccessDenied => "access_denied",
            ErrorCode::ExpiredToken => "expired_token",
            ErrorCode::NotFound => "not_found",
            ErrorCode::ServerError => "server_error",
            ErrorCode::TemporarilyUnavailable => "temporarily_unavailable",
        }
    }

    /// The HTTP status RFC 6749 §5.2 asks for.
    pub fn status(self) -> u16 {
        match self {
            ErrorCode::InvalidClient => 401,
            ErrorCode::NotFound => 404,
            ErrorCode::ServerError => 500,
            ErrorCode::TemporarilyUnavailable => 503,
            _ => 400,
        }
    }
}

/// An OAuth error response: the code and a human-readable description.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OAuthError {
    /// The RFC 6749 `error`.
    pub error: ErrorCode,
    /// The RFC 6749 `error_description`: for the developer reading logs, never a secret.
    pub error_description: Cow<'static, str>,
    /// With `slow_down`: the code's grown interval. Not in RFC 8628, but a client that reads
    /// it needs no arithmetic.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
}

impl OAuthError {
    /// An error with a description.
    pub fn new(error: ErrorCode, description: impl Into<Cow<'static, str>>) -> OAuthError {
        OAuthError {
            error,
            error_description: description.into(),
            interval: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as_str_is_the_serialized_code() {
        use ErrorCode::*;
        for code in [
            InvalidRequest,
            InvalidClient,
            InvalidGrant,
            UnauthorizedClient,
            UnsupportedGrantType,
            InvalidScope,
            InvalidTarget,
            AuthorizationPending,
            SlowDown,
            AccessDenied,
            ExpiredToken,
            NotFound,
            ServerError,
            TemporarilyUnavailable,
        ] {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
