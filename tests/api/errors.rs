//! The `{error, message, suggested, metadata}` shape for every status the API answers with,
//! the headers that go with some (Allow, WWW-Authenticate, Retry-After), and the served OpenAPI
//! document against the routes the server really has.

use serde_json::{json, Value};

use crate::harness::{assert_bad_field, assert_error, Server, World};

/// Every route that reads a JSON body, with a body it accepts (or refuses with 404).
fn body_routes(w: &World) -> Vec<(&'static str, String)> {
    vec![
        ("PUT", "/api/v1/devices/verify".into()),
        ("PUT", format!("/api/v1/devices/{}", w.root.device_id)),
        ("POST", "/api/v1/admin/oauth/clients".into()),
        ("PATCH", format!("/api/v1/admin/oauth/clients/{}", w.cli)),
        ("POST", "/api/v1/admin/users".into()),
        ("PATCH", format!("/api/v1/admin/users/{}", w.root_id)),
    ]
}

#[test]
fn not_found_and_method_not_allowed() {
    let w = World::new();
    for path in [
        "/api/v1/nope",
        "/api/v1/devices/",
        "/api/v1/devices/a/b",
        "/api/v2/devices",
        "/api/v1/admin/users/x/y",
        "/api",
    ] {
        let r = w.get(path, &w.root.access);
        let meta = assert_error(&r, 404, "not_found");
        assert_eq!(meta, json!({}), "{path}");
    }

    let id = "00000000-0000-4000-8000-000000000000";
    let cases = [
        (
            "POST",
            format!("/api/v1/devices/{id}"),
            "GET, HEAD, PUT, DELETE",
        ),
        (
            "PATCH",
            format!("/api/v1/devices/{id}"),
            "GET, HEAD, PUT, DELETE",
        ),
        ("DELETE", "/api/v1/devices".into(), "GET, HEAD"),
        ("POST", "/api/v1/devices".into(), "GET, HEAD"),
        ("PUT", "/api/v1/admin/users".into(), "GET, HEAD, POST"),
        (
            "DELETE",
            "/api/v1/admin/oauth/clients".into(),
            "GET, HEAD, POST",
        ),
        (
            "PUT",
            format!("/api/v1/admin/oauth/clients/{id}"),
            "GET, HEAD, PATCH, DELETE",
        ),
        (
            "POST",
            format!("/api/v1/admin/users/{id}"),
            "GET, HEAD, PATCH, DELETE",
        ),
        (
            "GET",
            format!("/api/v1/admin/oauth/clients/{id}/secret"),
            "POST",
        ),
        (
            "GET",
            format!("/api/v1/admin/oauth/device-authorizations/{id}/deny"),
            "POST",
        ),
        (
            "PUT",
            "/api/v1/admin/oauth/device-authorizations".into(),
            "GET, HEAD",
        ),
        ("POST", "/api/v1/admin/keys".into(), "GET, HEAD"),
        ("GET", "/api/v1/admin/keys/some-kid".into(), "DELETE"),
        ("POST", "/api/v1/openapi.json".into(), "GET, HEAD"),
        ("OPTIONS", "/api/v1/devices".into(), "GET, HEAD"),
    ];
    for (method, path, allow) in &cases {
        for token in [Some(w.root.access.as_str()), None] {
            let r = w.api(method, path, token, None);
            let meta = assert_error(&r, 405, "method_not_allowed");
            assert_eq!(meta, json!({}));
            assert_eq!(r.header("allow"), Some(*allow), "{method} {path}");
        }
    }
}

#[test]
fn bad_request_names_the_field() {
    let w = World::new();
    let path = format!("/api/v1/devices/{}", w.root.device_id);
    let json_header = [
        ("authorization", format!("Bearer {}", w.root.access)),
        ("content-type", "application/json".to_string()),
    ];
    let h: Vec<(&str, &str)> = json_header.iter().map(|(k, v)| (*k, v.as_str())).collect();
    for body in [&b"{"[..], b"", b"nul", b"{\"name\": }", b"\xff\xfe"] {
        let r = w.raw("PUT", &path, &h, Some(body.to_vec()));
        assert_bad_field(&r, "body");
        assert!(
            r.body["message"].as_str().unwrap().contains("JSON"),
            "{}",
            r.text
        );
    }
    for body in ["[]", "\"text\"", "42", "null"] {
        let r = w.raw("PUT", &path, &h, Some(body.as_bytes().to_vec()));
        assert_bad_field(&r, "body");
    }
    let r = w.put(
        &path,
        &w.root.access,
        json!({ "name": "ok", "colour": "red" }),
    );
    assert_bad_field(&r, "colour");
    assert!(r.body["message"].as_str().unwrap().contains("colour"));
    // JSON with a charset parameter is JSON.
    let r = w.raw(
        "PUT",
        &path,
        &[
            ("authorization", &format!("Bearer {}", w.root.access)),
            ("content-type", "Application/JSON; charset=utf-8"),
        ],
        Some(br#"{"name": "charset"}"#.to_vec()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["name"], "charset");
}

#[test]
fn unsupported_media_type() {
    let w = World::new();
    let auth = format!("Bearer {}", w.root.access);
    for (method, path) in body_routes(&w) {
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            None,
        ] {
            let mut h = vec![("authorization", auth.as_str())];
            if let Some(ct) = content_type {
                h.push(("content-type", ct));
            }
            let r = w.raw(method, &path, &h, Some(b"{}".to_vec()));
            let meta = assert_error(&r, 415, "unsupported_media_type");
            assert_eq!(
                meta,
                json!({ "expected": "application/json" }),
                "{method} {path}"
            );
        }
    }
}

#[test]
fn payload_too_large() {
    let w = World::new();
    let auth = format!("Bearer {}", w.root.access);
    let big = json!({ "name": "x", "device_metadata": { "k": "v".repeat(70_000) } })
        .to_string()
        .into_bytes();
    for (method, path) in body_routes(&w) {
        // The server closes the connection after a 413 without saying so (see
        // `payload_too_large_says_connection_close`): do not let the client reuse it.
        let h = [
            ("authorization", auth.as_str()),
            ("content-type", "application/json"),
            ("connection", "close"),
        ];
        let r = w.raw(method, &path, &h, Some(big.clone()));
        let meta = assert_error(&r, 413, "payload_too_large");
        assert_eq!(meta, json!({ "limit": 65536 }), "{method} {path}");
    }
    // Smaller server limit, declared and chunked bodies.
    let w = World::with_env(&[("HALLPASS_SERVER_MAX_BODY_SIZE", "1000")]);
    let path = format!("/api/v1/devices/{}", w.root.device_id);
    let body = |n: usize| json!({ "name": "ok", "device_metadata": { "k": "v".repeat(n) } });
    let auth = format!("Bearer {}", w.root.access);
    let h = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
        ("connection", "close"),
    ];
    let r = w.raw("PUT", &path, &h, Some(body(2000).to_string().into_bytes()));
    let meta = assert_error(&r, 413, "payload_too_large");
    assert_eq!(meta, json!({ "limit": 1000 }));
    let r = w.put(&path, &w.root.access, body(900));
    assert_eq!(r.status, 200, "{}", r.text);
    let r = w.chunked(
        "PUT",
        &path,
        &w.root.access,
        body(2000).to_string().into_bytes(),
    );
    assert_error(&r, 413, "payload_too_large");
}

/// A 413 is answered before the body is read and the connection is then closed; without
/// `Connection: close` a keep-alive client reuses the dead connection and its next request
/// fails (hyper: IncompleteMessage).
#[test]
fn payload_too_large_says_connection_close() {
    let w = World::new();
    let path = format!("/api/v1/devices/{}", w.root.device_id);
    let big = json!({ "device_metadata": { "k": "v".repeat(70_000) } });
    for _ in 0..20 {
        let r = w.put(&path, &w.root.access, big.clone());
        assert_error(&r, 413, "payload_too_large");
        assert_eq!(r.header("connection"), Some("close"));
        // The next request on the pool must work.
        assert_eq!(w.get("/api/v1/devices", &w.root.access).status, 200);
    }
}

#[test]
fn database_busy_is_503_with_retry_after() {
    if crate::harness::on_postgres() {
        return; // holds SQLite's write lock through the file (busy_timeout is SQLite's)
    }
    let w = World::with_env(&[("HALLPASS_DATABASE_BUSY_TIMEOUT", "200ms")]);
    let (alice_id, _) = w.user("alice");
    let conn = rusqlite::Connection::open(w.db_path()).expect("open the database");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn.execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");

    let path = format!("/api/v1/admin/users/{alice_id}");
    let r = w.patch(&path, &w.root.access, json!({ "disabled": true }));
    let meta = assert_error(&r, 503, "unavailable");
    assert_eq!(meta, json!({}));
    assert_eq!(r.header("retry-after"), Some("1"));
    let r = w.post("/api/v1/admin/keys/rotate", &w.root.access, None);
    assert_error(&r, 503, "unavailable");
    // Reads go on.
    assert_eq!(w.get("/api/v1/admin/users", &w.root.access).status, 200);

    conn.execute_batch("ROLLBACK").unwrap();
    let r = w.patch(&path, &w.root.access, json!({ "disabled": true }));
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn head_is_get_without_a_body() {
    let w = World::new();
    let r = w.api("HEAD", "/api/v1/devices", Some(&w.root.access), None);
    assert_eq!(r.status, 200);
    assert_eq!(r.text, "");
    let r = w.api("HEAD", "/api/v1/devices", None, None);
    assert_eq!(r.status, 401);
}

/// The document is served without credentials, is the one in the repository, and every
/// operation it lists is a route of the server (401 without a token, never 404 or 405), while
/// every other method on its paths is a 405.
#[test]
fn the_served_openapi_document_matches_the_server() {
    let s = Server::start();
    let r = s.raw("GET", "/api/v1/openapi.json", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let file: Value = serde_json::from_str(include_str!("../../src/api/openapi.json")).unwrap();
    assert_eq!(r.body, file);
    assert_eq!(r.body["openapi"], "3.1.0");

    let schemes = &r.body["components"]["securitySchemes"];
    assert_eq!(schemes["bearer"]["scheme"], "bearer");
    assert_eq!(schemes["session"]["name"], "hallpass_session");
    assert_eq!(schemes["session"]["in"], "cookie");
    assert_eq!(schemes["csrf"]["name"], "X-CSRF-Token");

    let id = "00000000-0000-4000-8000-000000000000";
    let methods = ["get", "put", "post", "patch", "delete"];
    let mut operations = 0;
    for (template, item) in r.body["paths"].as_object().unwrap() {
        let path = template
            .split('/')
            .map(|seg| if seg.starts_with('{') { id } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        for method in methods {
            let resp = s.api(&method.to_uppercase(), &path, None, None);
            match item.get(method) {
                Some(op) => {
                    operations += 1;
                    let responses = op["responses"].as_object().unwrap();
                    if template == "/api/v1/openapi.json" {
                        assert_eq!(resp.status, 200);
                        continue;
                    }
                    assert_error(&resp, 401, "unauthenticated");
                    for status in ["401", "403", "503"] {
                        assert!(
                            responses.contains_key(status),
                            "{method} {template}: {status}"
                        );
                    }
                    assert!(!op["security"].as_array().unwrap().is_empty());
                }
                None => {
                    // The server also reads these literal paths as `{device_id}` and `{kid}`;
                    // see `literal_paths_win_over_templates`.
                    if template.ends_with("/verify") || template.ends_with("/rotate") {
                        continue;
                    }
                    assert_error(&resp, 405, "method_not_allowed");
                }
            }
        }
    }
    assert_eq!(operations, 22);
}

/// OpenAPI matches a concrete path before a templated one, so `/api/v1/devices/verify` has only
/// PUT and `/api/v1/admin/keys/rotate` only POST: other methods are 405 with exactly that
/// `Allow`. The server instead reads them as a device id or a kid (404), and for
/// `GET /api/v1/admin/keys/rotate` sends `Allow: GET, HEAD, POST, PUT, PATCH, DELETE` — GET
/// included, on a 405 to a GET.
#[test]
fn literal_paths_win_over_templates() {
    let w = World::new();
    for (method, path, allow) in [
        ("GET", "/api/v1/admin/keys/rotate", "POST"),
        ("DELETE", "/api/v1/admin/keys/rotate", "POST"),
        ("GET", "/api/v1/devices/verify", "PUT"),
        ("DELETE", "/api/v1/devices/verify", "PUT"),
    ] {
        let r = w.api(method, path, Some(&w.root.access), None);
        assert_error(&r, 405, "method_not_allowed");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
    }
}
