//! Pure OAuth protocol logic: codes, scopes, resource indicators, poll decisions, error codes,
//! JWTs and the PEM keys operators import. No I/O happens here, so everything is unit-tested
//! directly; the layers above (the store, the use cases, the front ends) call it.

pub mod codes;
pub mod error;
pub mod jwt;
pub mod pem;
pub mod poll;
pub mod resource;
pub mod scope;

/// Grant type URIs and names this server knows (RFC 6749 §4, RFC 8628 §3.4).
pub mod grant {
    /// RFC 8628 §3.4.
    pub const DEVICE_CODE: &str = "urn:ietf:params:oauth:grant-type:device_code";
    /// RFC 6749 §6.
    pub const REFRESH_TOKEN: &str = "refresh_token";
    /// RFC 6749 §4.4.
    pub const CLIENT_CREDENTIALS: &str = "client_credentials";
    /// Every grant a client may be allowed.
    pub const ALL: &[&str] = &[DEVICE_CODE, REFRESH_TOKEN, CLIENT_CREDENTIALS];
}
