//! Secrets: random bearer credentials, their hashes, password hashing, and constant-time
//! comparison.
//!
//! Bearer credentials (device codes, refresh tokens, client secrets, session ids) carry 256
//! bits from the OS RNG, so a single unsalted SHA-256 is enough to store them: there is nothing
//! to brute-force. Passwords are low-entropy and get PBKDF2-HMAC-SHA256 with a random salt and
//! OWASP's recommended iteration count (600,000 in 2023).

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use ring::{digest, pbkdf2};

/// PBKDF2 iterations for new password hashes (OWASP Password Storage Cheat Sheet, 2023).
pub const PBKDF2_ITERATIONS: u32 = 600_000;

/// `N` bytes from the operating system's RNG.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).expect("the OS random number generator failed");
    buf
}

/// A new 256-bit bearer credential, base32 without padding (52 characters, URL- and form-safe).
pub fn new_token() -> String {
    base32::encode(
        base32::Alphabet::Rfc4648 { padding: false },
        &random_bytes::<32>(),
    )
}

/// The stored form of a bearer credential.
pub fn hash_token(token: &str) -> Vec<u8> {
    digest::digest(&digest::SHA256, token.as_bytes())
        .as_ref()
        .to_vec()
}

/// Compares two secrets (or their hashes) in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    // ring's own helper is deprecated; XOR-fold every byte and keep the optimiser from
    // turning the fold into an early exit. Lengths are not secret (hashes are fixed-size).
    if a.len() != b.len() {
        return false;
    }
    let diff = a
        .iter()
        .zip(b)
        .fold(0u8, |acc, (x, y)| std::hint::black_box(acc | (x ^ y)));
    diff == 0
}

/// Hashes a password as `pbkdf2-sha256$<iterations>$<salt>$<hash>` (base64, no padding).
pub fn hash_password(password: &str) -> String {
    hash_password_with(password, PBKDF2_ITERATIONS)
}

fn hash_password_with(password: &str, iterations: u32) -> String {
    let salt = random_bytes::<16>();
    let mut out = [0u8; 32];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        NonZeroU32::new(iterations).expect("iterations > 0"),
        &salt,
        password.as_bytes(),
        &mut out,
    );
    format!(
        "pbkdf2-sha256${iterations}${}${}",
        B64.encode(salt),
        B64.encode(out)
    )
}

/// Checks `password` against a stored hash; a malformed hash never verifies.
pub fn verify_password(password: &str, stored: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some("pbkdf2-sha256"), Some(iter), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let (Some(iter), Ok(salt), Ok(hash)) = (
        iter.parse().ok().and_then(NonZeroU32::new),
        B64.decode(salt),
        B64.decode(hash),
    ) else {
        return false;
    };
    // ring's verify compares in constant time.
    pbkdf2::verify(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iter,
        &salt,
        password.as_bytes(),
        &hash,
    )
    .is_ok()
}

/// A hash to verify against when the user does not exist, so a sign-in with an unknown name
/// takes as long as one with a wrong password.
pub fn dummy_password_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password("not a real password"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_round_trip_and_salt() {
        let a = hash_password_with("hunter2", 1000);
        let b = hash_password_with("hunter2", 1000);
        assert_ne!(a, b, "salted");
        assert!(verify_password("hunter2", &a));
        assert!(!verify_password("hunter3", &a));
        assert!(!verify_password("hunter2", "garbage"));
        assert!(!verify_password("hunter2", "pbkdf2-sha256$0$AA$AA"));
    }

    #[test]
    fn tokens_are_long_and_distinct() {
        let t = new_token();
        assert_eq!(t.len(), 52);
        assert_ne!(t, new_token());
        assert_eq!(hash_token(&t).len(), 32);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }
}
