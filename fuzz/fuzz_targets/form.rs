//! `Form::parse` and its accessors on arbitrary bodies.
//!
//! Input: the first byte is the `max_chars` given to `text`, the rest is the form body.
//! Checked against `form_urlencoded`'s own decoding of the body (the pairs the form must hold):
//! - `parse` fails exactly when a name is repeated, with `invalid_request`, and the error
//!   renders on every surface;
//! - otherwise every name with a non-empty value is there with that value, empty ones are
//!   absent, `require` agrees with `get`, and `text` trims, bounds and refuses control
//!   characters as documented;
//! - round trip: re-encoding the pairs (in reverse order) and parsing again gives the same form.
#![no_main]

use std::collections::HashSet;

use hallpass::http::{Error, Form, Surface};
use hallpass::protocol::error::ErrorCode;
use libfuzzer_sys::fuzz_target;

fn check_text(form: &Form, key: &str, max: usize) {
    match (form.get(key), form.text(key, max)) {
        (None, Ok(None)) => {}
        (Some(v), Ok(Some(t))) => {
            assert!(v.chars().count() <= max, "{v:?} longer than {max}");
            assert!(!v.chars().any(char::is_control), "{v:?} has a control char");
            assert_eq!(t, v.trim());
            assert!(t.chars().count() <= max);
        }
        (Some(v), Err(e)) => {
            assert!(
                v.chars().count() > max || v.chars().any(char::is_control),
                "text refused {v:?} (max {max}): {e}"
            );
            assert!(matches!(e, Error::OAuth(ref o) if o.error == ErrorCode::InvalidRequest));
        }
        (got, res) => panic!("get {got:?} but text {res:?}"),
    }
}

fn encode(pairs: &[(String, String)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

fuzz_target!(|data: &[u8]| {
    let Some((&max, body)) = data.split_first() else {
        return;
    };
    let max = usize::from(max);
    let pairs: Vec<(String, String)> = form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let mut seen = HashSet::new();
    let repeated = pairs.iter().any(|(k, _)| !seen.insert(k.as_str()));

    let form = match Form::parse(body) {
        Err(e) => {
            assert!(repeated, "refused a body without repeats: {e}");
            assert!(matches!(e, Error::OAuth(ref o) if o.error == ErrorCode::InvalidRequest));
            for surface in [Surface::OAuth, Surface::Api, Surface::Other] {
                let resp = Form::parse(body).unwrap_err().into_response(surface);
                assert_eq!(resp.status(), 400);
            }
            return;
        }
        Ok(form) => form,
    };
    assert!(!repeated, "accepted a repeated parameter");

    for (k, v) in &pairs {
        if v.is_empty() {
            assert_eq!(form.get(k), None, "empty {k:?} kept");
            assert!(form.require(k).is_err());
        } else {
            assert_eq!(form.get(k), Some(v.as_str()));
            assert_eq!(form.require(k).ok(), Some(v.as_str()));
        }
        check_text(&form, k, max);
    }
    // A name that is not in the body.
    let absent = "\u{0}absent";
    if !seen.contains(absent) {
        assert_eq!(form.get(absent), None);
        assert!(form.require(absent).is_err());
        check_text(&form, absent, max);
    }

    // Round trip through the encoder, in another order.
    let reversed: Vec<_> = pairs.iter().rev().cloned().collect();
    let again = Form::parse(encode(&reversed).as_bytes()).expect("re-encoded form parses");
    for (k, _) in &pairs {
        assert_eq!(again.get(k), form.get(k), "round trip changed {k:?}");
    }
});
