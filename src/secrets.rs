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

/// Characters of a [`new_ordered_token`]: 38 bytes in base32.
const ORDERED_LEN: usize = 61;

/// A new bearer credential for a table looked up by it (device codes, refresh tokens): 48 bits
/// of the current time in milliseconds, then 256 random bits, base32 without padding (61
/// characters). Its [`token_key`] starts with that time, so new rows land at the right edge of
/// the table's unique index instead of dirtying a random page each: with group commit, a
/// random key costs one more 4 KiB WAL frame per row (issue 7, W1 and W4). The time is no
/// secret (the API shows when a device asked); the 256 random bits are the credential.
pub fn new_ordered_token() -> String {
    let ms = crate::clock::now_ms().max(0) as u64;
    let mut raw = [0u8; 38];
    raw[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    raw[6..].copy_from_slice(&random_bytes::<32>());
    base32::encode(base32::Alphabet::Rfc4648 { padding: false }, &raw)
}

/// The key a device code or refresh token is stored and looked up under: for a
/// [`new_ordered_token`], its 6 time bytes followed by the SHA-256 of the whole token; for
/// anything else (credentials issued before ordered tokens, or garbage), the SHA-256 alone.
/// Either way the last 32 bytes are [`hash_token`]. The time bytes come from the presented
/// token, but the digest covers all of it, so only the exact token finds its row.
pub fn token_key(token: &str) -> Vec<u8> {
    let digest = hash_token(token);
    let head = (token.len() == ORDERED_LEN)
        .then(|| token.get(..16))
        .flatten()
        .and_then(|h| base32::decode(base32::Alphabet::Rfc4648 { padding: false }, h));
    match head {
        // 16 base32 characters are 10 bytes; the first 6 are the time.
        Some(head) if head.len() == 10 => [&head[..6], &digest[..]].concat(),
        _ => digest,
    }
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

    #[test]
    fn ordered_tokens_have_time_ordered_keys() {
        let a = new_ordered_token();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_ordered_token();
        assert_eq!(a.len(), ORDERED_LEN);
        let (ka, kb) = (token_key(&a), token_key(&b));
        assert_eq!(ka.len(), 38);
        assert!(ka < kb, "a later token sorts after");
        assert_eq!(&ka[6..], hash_token(&a).as_slice());
        // The time bytes are the issue time.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let mut t = [0u8; 8];
        t[2..].copy_from_slice(&kb[..6]);
        assert!(now.abs_diff(u64::from_be_bytes(t)) < 60_000);
        // Older credentials, and anything else, keep the plain digest.
        let old = new_token();
        assert_eq!(token_key(&old), hash_token(&old));
        let odd = "é".repeat(30) + "x"; // 61 bytes, not on a char boundary at 16
        assert_eq!(token_key(&odd), hash_token(&odd));
        let lower = a.to_lowercase();
        assert_ne!(token_key(&lower), ka, "only the exact token finds the row");
    }
}
