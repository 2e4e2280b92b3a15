//! `http::oauth::parse_basic`: the `Authorization: Basic base64(id:secret)` reader, where id
//! and secret are each form-urlencoded first (RFC 6749 §2.3.1, appendix B).
//!
//! 1. The input as a header value: the result must equal an independent reading of the RFC
//!    (scheme `Basic` in any case, base64 with padding, split at the first `:`, then `+` is a
//!    space and `%XX` a byte; a `%` not followed by two hex digits stays as it is).
//! 2. Round trip: id and secret taken from the input (split at the first 0xFF byte), encoded
//!    as a client must, with the scheme's case and surrounding spaces chosen by the input,
//!    must parse back to exactly that id and secret.
#![no_main]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use hallpass::http::oauth::parse_basic;
use libfuzzer_sys::fuzz_target;

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

/// application/x-www-form-urlencoded decoding of one whole value (no `&` or `=` splitting).
fn urldecode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() && hex(b[i + 1]).is_some() && hex(b[i + 2]).is_some() => {
                out.push(hex(b[i + 1]).unwrap() * 16 + hex(b[i + 2]).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn reference(value: &[u8]) -> Option<(String, String)> {
    let value = std::str::from_utf8(value).ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = String::from_utf8(B64.decode(rest.trim()).ok()?).ok()?;
    let (id, secret) = raw.split_once(':')?;
    Some((urldecode(id), urldecode(secret)))
}

fn encode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

fuzz_target!(|data: &[u8]| {
    assert_eq!(
        parse_basic(data),
        reference(data),
        "{:?}",
        String::from_utf8_lossy(data)
    );

    let Some((&style, rest)) = data.split_first() else {
        return;
    };
    let (id, secret) = match rest.iter().position(|&b| b == 0xff) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    let (id, secret) = (String::from_utf8_lossy(id), String::from_utf8_lossy(secret));
    let scheme = ["Basic", "basic", "BASIC", "bAsIc"][usize::from(style & 3)];
    let pad = ["", " ", "  ", "\t"];
    let header = format!(
        "{}{scheme} {}{}{}",
        pad[usize::from(style >> 2 & 3)],
        pad[usize::from(style >> 4 & 3)],
        B64.encode(format!("{}:{}", encode(&id), encode(&secret))),
        pad[usize::from(style >> 6 & 3)],
    );
    assert_eq!(
        parse_basic(header.as_bytes()),
        Some((id.into_owned(), secret.into_owned())),
        "{header:?}"
    );
});
