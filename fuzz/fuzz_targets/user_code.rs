//! `UserCode::parse`: how a person's typing of a code is normalized.
//!
//! Two inputs from each fuzz case:
//! 1. the bytes as text (when UTF-8): `parse` must agree with the documented rule (at most 64
//!    bytes; drop whitespace and dashes; ASCII upper case; then exactly 8 letters of the
//!    alphabet), and any result is canonical (8 letters, `XXXX-XXXX` displayed) and a fixed
//!    point: parsing its stored form, displayed form or lower-cased form gives it back;
//! 2. a code built from the first 8 bytes, typed with the case, dashes and spaces the rest of
//!    the bytes choose: it must parse back to exactly that code while it fits in 64 bytes.
#![no_main]

use hallpass::protocol::codes::{UserCode, ALPHABET, LEN};
use libfuzzer_sys::fuzz_target;

/// Separators a person (or a copy and paste) may put anywhere.
const NOISE: [&str; 8] = [" ", "-", "\t", "\n", "\r\n", "\u{a0}", "\u{3000}", "--"];

fn check_canonical(c: &UserCode) {
    let s = c.as_str();
    assert_eq!(s.len(), LEN, "{s:?}");
    assert!(s.bytes().all(|b| ALPHABET.contains(&b)), "{s:?}");
    let shown = c.to_string();
    assert_eq!(shown.len(), LEN + 1);
    assert_eq!(&shown[4..5], "-");
    assert_eq!(format!("{}{}", &shown[..4], &shown[5..]), s);
    for typed in [
        s.to_string(),
        shown.clone(),
        s.to_lowercase(),
        shown.to_lowercase(),
    ] {
        assert_eq!(UserCode::parse(&typed).as_ref(), Some(c), "{typed:?}");
    }
}

/// The rule as documented, written independently.
fn expected(input: &str) -> Option<String> {
    if input.len() > 64 {
        return None;
    }
    let mut out = String::new();
    for c in input.chars() {
        if c.is_whitespace() || c == '-' {
            continue;
        }
        if !c.is_ascii() {
            return None;
        }
        out.push(c.to_ascii_uppercase());
    }
    (out.len() == LEN && out.bytes().all(|b| ALPHABET.contains(&b))).then_some(out)
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let got = UserCode::parse(text);
        assert_eq!(
            got.as_ref().map(UserCode::as_str),
            expected(text).as_deref(),
            "{text:?}"
        );
        if let Some(c) = &got {
            check_canonical(c);
        }
    }

    if data.len() < LEN {
        return;
    }
    let (letters, style) = data.split_at(LEN);
    let code: String = letters
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    // Each style byte decorates one letter: bit 0 lower case, bits 1-4 what goes before it.
    let mut typed = String::new();
    for (i, ch) in code.chars().enumerate() {
        let s = style.get(i).copied().unwrap_or(0);
        if s & 0b10 != 0 {
            typed.push_str(NOISE[usize::from(s >> 2) % NOISE.len()]);
        }
        typed.push(if s & 1 != 0 {
            ch.to_ascii_lowercase()
        } else {
            ch
        });
    }
    if let Some(&s) = style.get(LEN) {
        typed.push_str(NOISE[usize::from(s) % NOISE.len()]);
    }
    let got = UserCode::parse(&typed);
    if typed.len() <= 64 {
        let c = got.unwrap_or_else(|| panic!("refused {typed:?} for {code}"));
        assert_eq!(c.as_str(), code);
        check_canonical(&c);
    } else {
        assert_eq!(got, None, "the 64-byte bound");
    }
});
