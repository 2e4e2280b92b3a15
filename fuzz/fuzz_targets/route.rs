//! The router's path handling: `api::resolve` (method and path to operation), `api::template_of`
//! (the metrics label) and `http::Surface::of` (which error shape a path gets).
//!
//! Input: `METHOD SP PATH` (no space: the whole input is the path, method GET); the method is
//! `Method::from_bytes` of arbitrary bytes, the path is any text. Checked against the route
//! table itself, with an independent matcher:
//! - `template_of` is the first template in `ROUTES` the path fits, and every template fits
//!   only paths under `/api/` (so `Surface::of` says Api);
//! - `resolve` returns an operation only for a most specific fitting template with that method
//!   (HEAD as GET), and substituting its parameters back into the template gives the path;
//! - otherwise 404 exactly when nothing fits, else 405 whose `Allow` is a valid header listing,
//!   in order and without repeats, methods that each do resolve (HEAD with GET), never the
//!   request's own.
#![no_main]

use hallpass::api::{resolve, template_of, Op, ROUTES};
use hallpass::http::{Error, Surface};
use hyper::header::HeaderValue;
use hyper::Method;
use libfuzzer_sys::fuzz_target;

/// The parameters of `path` if it fits `template` (segments: literals equal, `{x}` non-empty).
fn fits<'p>(template: &str, path: &'p str) -> Option<Vec<&'p str>> {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    if t.len() != p.len() {
        return None;
    }
    let mut params = Vec::new();
    for (t, p) in t.iter().zip(&p) {
        if t.starts_with('{') {
            if p.is_empty() {
                return None;
            }
            params.push(*p);
        } else if t != p {
            return None;
        }
    }
    Some(params)
}

/// `template` with its parameters replaced, in order, by `params`.
fn fill(template: &str, params: &[&str]) -> String {
    let mut params = params.iter();
    template
        .split('/')
        .map(|t| {
            if t.starts_with('{') {
                *params.next().expect("enough parameters")
            } else {
                t
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

fn literals(template: &str) -> usize {
    template.split('/').filter(|s| !s.starts_with('{')).count()
}

fn check(method: &Method, path: &str) {
    let surface = Surface::of(path);
    let fitting: Vec<(&str, &str, Op, Vec<&str>)> = ROUTES
        .iter()
        .filter_map(|&(m, t, op)| fits(t, path).map(|ps| (m, t, op, ps)))
        .collect();
    assert_eq!(
        template_of(path),
        fitting.first().map(|f| f.1),
        "template_of({path:?})"
    );
    if !fitting.is_empty() {
        assert_eq!(
            surface,
            Surface::Api,
            "{path:?} routes but is not under /api/"
        );
    }
    let best = fitting.iter().map(|f| literals(f.1)).max();
    let wanted = if method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };

    match resolve(method, path) {
        Ok((op, params)) => {
            let route = fitting
                .iter()
                .find(|f| f.0 == wanted && f.2 == op && Some(literals(f.1)) == best)
                .unwrap_or_else(|| panic!("{method} {path:?} resolved to {op:?}, not a best fit"));
            assert_eq!(params, route.3);
            assert!(params.iter().all(|p| !p.is_empty() && !p.contains('/')));
            assert_eq!(fill(route.1, &params), path, "round trip");
            if method == Method::GET || method == Method::HEAD {
                let other = if method == Method::GET {
                    Method::HEAD
                } else {
                    Method::GET
                };
                let (op2, params2) = resolve(&other, path).expect("HEAD and GET agree");
                assert_eq!((op2, params2), (op, params));
            }
        }
        Err(Error::NotFound(_)) => {
            assert!(
                fitting.is_empty(),
                "404 for {path:?}, which fits {fitting:?}"
            );
        }
        Err(Error::MethodNotAllowed(allow)) => {
            assert!(!fitting.is_empty(), "405 for {path:?}, which fits nothing");
            assert!(!allow.is_empty());
            assert!(HeaderValue::from_str(&allow).is_ok(), "Allow {allow:?}");
            let names: Vec<&str> = allow.split(", ").collect();
            let order = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
            let pos: Vec<usize> = names
                .iter()
                .map(|n| order.iter().position(|o| o == n).expect("known method"))
                .collect();
            assert!(pos.windows(2).all(|w| w[0] < w[1]), "Allow {allow:?} order");
            assert_eq!(names.contains(&"GET"), names.contains(&"HEAD"));
            assert!(
                !names.contains(&method.as_str()),
                "{method} is in Allow {allow:?}"
            );
            for n in names {
                let m = Method::from_bytes(n.as_bytes()).unwrap();
                assert!(
                    resolve(&m, path).is_ok(),
                    "Allow lists {n} but {n} {path:?} fails"
                );
            }
            let err = resolve(method, path).unwrap_err();
            let resp = err.into_response(Surface::Api);
            assert_eq!(resp.status(), 405);
            assert_eq!(resp.headers()["allow"], allow.as_ref());
        }
        Err(e) => panic!("unexpected error {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let (method, path) = match data.iter().position(|&b| b == b' ') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b"GET"[..], data),
    };
    let Ok(method) = Method::from_bytes(method) else {
        return;
    };
    let path = String::from_utf8_lossy(path);
    check(&method, &path);
});
