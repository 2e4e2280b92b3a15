//! User codes and device codes (RFC 8628 §6.1).
//!
//! A user code is 8 characters from a 20-letter alphabet without vowels (so no words are
//! spelled) and without look-alikes: 20^8 ≈ 2^34.6 codes. With the guessing limits on the
//! verification page and codes that live 10 minutes, an attacker's odds stay negligible
//! (RFC 8628 §5.1). It is shown as `WDJB-MJHT` and accepted in any case, with or without the
//! dash, with surrounding spaces.

use std::fmt;

/// The base-20 alphabet of RFC 8628 §6.1's example: consonants only.
pub const ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";

/// Length of a user code without its dash.
pub const LEN: usize = 8;

/// A normalized user code: exactly 8 letters of [`ALPHABET`], upper case, no dash.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserCode(String);

impl UserCode {
    /// A new random code, drawn without modulo bias.
    pub fn generate() -> UserCode {
        let mut code = String::with_capacity(LEN);
        while code.len() < LEN {
            for b in crate::secrets::random_bytes::<16>() {
                // 240 = 12 * 20: reject the top 16 values so every letter is equally likely.
                if b < 240 && code.len() < LEN {
                    code.push(ALPHABET[(b % 20) as usize] as char);
                }
            }
        }
        UserCode(code)
    }

    /// Reads a code as a person typed it: any case, spaces and dashes anywhere are ignored.
    /// Returns `None` for anything that cannot be a code, without touching the database.
    pub fn parse(input: &str) -> Option<UserCode> {
        if input.len() > 64 {
            return None;
        }
        let code: String = input
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        (code.len() == LEN && code.bytes().all(|b| ALPHABET.contains(&b))).then_some(UserCode(code))
    }

    /// Why `input` cannot be a user code, in words for the person who typed it; `None` when it
    /// has the shape of one (8 letters of [`ALPHABET`], any case, dashes and spaces ignored).
    /// A malformed entry cannot match any code, so it is answered without a lookup and does
    /// not count as a guess (issue 21).
    pub fn shape_problem(input: &str) -> Option<String> {
        if UserCode::parse(input).is_some() {
            return None;
        }
        let letters: Vec<char> = input
            .chars()
            .filter(|c| !c.is_whitespace() && *c != '-')
            .collect();
        Some(if letters.len() != LEN {
            format!(
                "A code has 8 letters, like WDJB-MJHT; this has {}.",
                letters.len()
            )
        } else {
            "A code has 8 letters, like WDJB-MJHT, and no vowels or digits: only B C D F G H J K L M N P Q R S T V W X Z.".to_string()
        })
    }

    /// The stored form (no dash).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Wraps a value read back from the database, which only ever holds normalized codes.
    pub fn from_stored(s: String) -> UserCode {
        UserCode(s)
    }
}

/// The displayed form, `XXXX-XXXX`.
impl fmt::Display for UserCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", &self.0[..4], &self.0[4..])
    }
}

/// A device code: 256 bits from the OS RNG after 48 bits of time, base32
/// ([`crate::secrets::new_ordered_token`]). Only its key (time, then hash) is stored.
#[derive(Clone)]
pub struct DeviceCode(pub String);

impl fmt::Debug for DeviceCode {
    /// Never the secret itself.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceCode(..)")
    }
}

impl DeviceCode {
    /// A fresh device code.
    pub fn generate() -> DeviceCode {
        DeviceCode(crate::secrets::new_ordered_token())
    }

    /// The stored form: [`crate::secrets::token_key`].
    pub fn key(&self) -> Vec<u8> {
        crate::secrets::token_key(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_codes_parse_back() {
        for _ in 0..1000 {
            let c = UserCode::generate();
            assert_eq!(c.as_str().len(), LEN);
            assert_eq!(UserCode::parse(&c.to_string()), Some(c.clone()));
            assert_eq!(UserCode::parse(&c.as_str().to_lowercase()), Some(c));
        }
    }

    #[test]
    fn parse_is_forgiving_but_strict() {
        let want = UserCode("WDJBMJHT".into());
        assert_eq!(UserCode::parse("WDJB-MJHT"), Some(want.clone()));
        assert_eq!(UserCode::parse("  wdjb mjht \n"), Some(want.clone()));
        assert_eq!(UserCode::parse("wdjbmjht"), Some(want.clone()));
        assert_eq!(want.to_string(), "WDJB-MJHT");
        assert_eq!(UserCode::parse("WDJB-MJH"), None);
        assert_eq!(UserCode::parse("WDJB-MJHA"), None, "vowel");
        assert_eq!(UserCode::parse("WDJB-MJH1"), None, "digit");
        assert_eq!(UserCode::parse("WDJB-MJHTT"), None);
        assert_eq!(UserCode::parse(""), None);
        assert_eq!(UserCode::parse("ẞẞẞẞẞẞẞẞ"), None);
    }

    #[test]
    fn malformed_codes_are_told_what_a_code_looks_like() {
        assert_eq!(UserCode::shape_problem("wdjb-mjht"), None);
        assert_eq!(
            UserCode::shape_problem("xxxx").as_deref(),
            Some("A code has 8 letters, like WDJB-MJHT; this has 4.")
        );
        assert!(UserCode::shape_problem("WDJB-MJHTT")
            .unwrap()
            .contains("this has 9"));
        assert!(UserCode::shape_problem("WDJB-MJHA")
            .unwrap()
            .contains("no vowels or digits"));
        assert!(UserCode::shape_problem(&"B".repeat(65))
            .unwrap()
            .contains("8 letters"));
    }

    #[test]
    fn letters_are_roughly_uniform() {
        let mut counts = [0u32; 20];
        for _ in 0..2000 {
            for b in UserCode::generate().as_str().bytes() {
                counts[ALPHABET.iter().position(|&a| a == b).unwrap()] += 1;
            }
        }
        // 16,000 letters, 800 expected each; a biased draw would skew the first 16 letters.
        assert!(
            counts.iter().all(|&c| (600..1000).contains(&c)),
            "{counts:?}"
        );
    }

    #[test]
    fn device_codes_are_256_bits_after_the_time() {
        let d = DeviceCode::generate();
        assert_eq!(d.0.len(), 61, "38 bytes: 6 of time, 32 random");
        assert_eq!(d.key().len(), 38);
        assert_ne!(d.0, DeviceCode::generate().0);
    }
}
