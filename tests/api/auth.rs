//! Who may call what: 401 without valid credentials, 403 without the scope or the role.

use serde_json::{json, Value};

use crate::harness::{assert_error, World};

/// Every admin route with a body that would pass validation.
fn admin_routes(w: &World) -> Vec<(&'static str, String, Option<Value>)> {
    let some = "00000000-0000-4000-8000-000000000000";
    vec![
        (
            "GET",
            "/api/v1/admin/oauth/device-authorizations".into(),
            None,
        ),
        (
            "POST",
            format!("/api/v1/admin/oauth/device-authorizations/{some}/deny"),
            None,
        ),
        ("GET", "/api/v1/admin/oauth/clients".into(), None),
        (
            "POST",
            "/api/v1/admin/oauth/clients".into(),
            Some(json!({ "name": "sneaky", "allowed_scopes": ["admin"] })),
        ),
        (
            "GET",
            format!("/api/v1/admin/oauth/clients/{}", w.cli),
            None,
        ),
        (
            "PATCH",
            format!("/api/v1/admin/oauth/clients/{}", w.cli),
            Some(json!({ "name": "renamed" })),
        ),
        (
            "DELETE",
            format!("/api/v1/admin/oauth/clients/{}", w.cli),
            None,
        ),
        (
            "POST",
            format!("/api/v1/admin/oauth/clients/{}/secret", w.svc),
            None,
        ),
        ("GET", "/api/v1/admin/users".into(), None),
        (
            "POST",
            "/api/v1/admin/users".into(),
            Some(json!({ "username": "mallory", "password": "long password", "is_admin": true })),
        ),
        ("GET", format!("/api/v1/admin/users/{}", w.root_id), None),
        (
            "PATCH",
            format!("/api/v1/admin/users/{}", w.root_id),
            Some(json!({ "disabled": true })),
        ),
        ("DELETE", format!("/api/v1/admin/users/{}", w.root_id), None),
        ("GET", "/api/v1/admin/keys".into(), None),
        ("POST", "/api/v1/admin/keys/rotate".into(), None),
        ("DELETE", "/api/v1/admin/keys/some-kid".into(), None),
    ]
}

/// Every device route.
fn device_routes(device_id: &str) -> Vec<(&'static str, String, Option<Value>)> {
    vec![
        ("GET", "/api/v1/devices".into(), None),
        (
            "PUT",
            "/api/v1/devices/verify".into(),
            Some(json!({ "user_code": "BBBB-BBBB" })),
        ),
        ("GET", format!("/api/v1/devices/{device_id}"), None),
        (
            "PUT",
            format!("/api/v1/devices/{device_id}"),
            Some(json!({ "name": "x" })),
        ),
        ("DELETE", format!("/api/v1/devices/{device_id}"), None),
    ]
}

#[test]
fn without_valid_credentials_every_route_is_401() {
    let w = World::new();
    let mut tampered = w.root.access.clone();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let headers: Vec<Option<String>> = vec![
        None,
        Some("Bearer".into()),
        Some("Bearer ".into()),
        Some("Bearer garbage".into()),
        Some(format!("Bearer {tampered}")),
        Some(format!("Basic {}", w.root.access)),
        Some(w.root.access.clone()),
        Some(format!("Bearer {}", w.root.refresh)),
    ];
    let routes = [admin_routes(&w), device_routes(&w.root.device_id)].concat();
    for header in &headers {
        for (method, path, body) in &routes {
            let mut h = vec![("content-type", "application/json")];
            if let Some(v) = header {
                h.push(("authorization", v));
            }
            let r = w.raw(
                method,
                path,
                &h,
                body.as_ref().map(|b| b.to_string().into_bytes()),
            );
            assert_error(&r, 401, "unauthenticated");
            assert_eq!(
                r.header("www-authenticate"),
                Some("Bearer realm=\"hallpass\""),
                "{method} {path} with {header:?}"
            );
        }
    }
    // Nothing happened: root is still there, with its token.
    let r = w.get("/api/v1/admin/users", &w.root.access);
    assert_eq!(r.body["total"], 1);
    // The document needs no credentials.
    let r = w.raw("GET", "/api/v1/openapi.json", &[], None);
    assert_eq!(r.status, 200);
}

#[test]
fn a_users_devices_token_is_403_on_every_admin_route() {
    let w = World::new();
    let (_, alice) = w.user("alice");
    for (method, path, body) in admin_routes(&w) {
        let r = w.api(method, &path, Some(&alice.access), body);
        assert_error(&r, 403, "forbidden");
    }
    // Nothing happened.
    let r = w.get("/api/v1/admin/users", &w.root.access);
    assert_eq!(r.body["total"], 2);
    assert_eq!(r.body["items"][1]["disabled"], false);
    assert_eq!(
        w.get("/api/v1/admin/keys", &w.root.access).body["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        w.get(
            &format!("/api/v1/admin/oauth/clients/{}", w.cli),
            &w.root.access
        )
        .body["name"],
        "cli"
    );

    // An administrator whose token lacks `admin` is refused too.
    let root_devices = w.login(&w.cli, "root", "devices");
    for (method, path, body) in admin_routes(&w) {
        let r = w.api(method, &path, Some(&root_devices.access), body);
        assert_error(&r, 403, "forbidden");
    }
}

#[test]
fn a_token_without_the_devices_scope_is_403_on_device_routes() {
    let w = World::new();
    w.add_user("alice", false);
    let extra_only = w.login(&w.cli, "alice", "extra");
    assert_eq!(extra_only.scope, "extra");
    let no_scope = w.login(&w.cli, "alice", "");
    for token in [&extra_only, &no_scope] {
        for (method, path, body) in device_routes(&token.device_id) {
            let r = w.api(method, &path, Some(&token.access), body);
            assert_error(&r, 403, "forbidden");
        }
        for (method, path, body) in admin_routes(&w) {
            let r = w.api(method, &path, Some(&token.access), body);
            assert_error(&r, 403, "forbidden");
        }
    }
    // The device itself is untouched.
    let r = w.get(
        &format!("/api/v1/devices/{}", extra_only.device_id),
        &w.root.access,
    );
    assert_eq!(r.body["name"], "alice-device");
}

#[test]
fn a_client_credentials_token_has_no_user_for_device_routes() {
    let w = World::new();
    // `devices` acts for a person: a client cannot get it for itself.
    let r = w.client_credentials(&w.svc, &w.svc_secret, "devices");
    assert_eq!(r.body["error"], "invalid_scope", "{}", r.text);
    let r = w.client_credentials(&w.svc, &w.svc_secret, "extra");
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.body["access_token"].as_str().unwrap().to_string();
    for (method, path, body) in device_routes(&w.root.device_id) {
        let r = w.api(method, &path, Some(&token), body);
        assert_error(&r, 403, "forbidden");
    }
    for (method, path, body) in admin_routes(&w) {
        let r = w.api(method, &path, Some(&token), body);
        assert_error(&r, 403, "forbidden");
    }
}

#[test]
fn a_demoted_admins_token_loses_admin_at_once() {
    let w = World::new();
    w.add_user("root2", true);
    let (alice_id, _) = w.user("alice");
    let root2 = w.login(&w.cli, "root2", "devices admin");
    let r = w.patch(
        &format!("/api/v1/admin/users/{}", w.root_id),
        &root2.access,
        json!({ "is_admin": false }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["is_admin"], false);
    // root's token still says `admin devices`, but root is no admin any more.
    assert_error(
        &w.get("/api/v1/admin/users", &w.root.access),
        403,
        "forbidden",
    );
    let r = w.get("/api/v1/devices", &w.root.access);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["total"], 1, "only root's own device: {}", r.text);
    let r = w.get(
        &format!("/api/v1/devices?user_id={alice_id}"),
        &w.root.access,
    );
    assert_error(&r, 403, "forbidden");
    // And back.
    let r = w.patch(
        &format!("/api/v1/admin/users/{}", w.root_id),
        &root2.access,
        json!({ "is_admin": true }),
    );
    assert_eq!(r.body["is_admin"], true);
    assert_eq!(w.get("/api/v1/admin/users", &w.root.access).status, 200);
}

/// The README: `admin` is "granted only when the approving user is an admin". A
/// client_credentials token has no user, yet a confidential client allowed `admin` gets a token
/// with it, and the API treats it as an administrator (it can create admin users).
#[test]
fn a_client_credentials_token_is_never_an_admin() {
    let w = World::new();
    let c = w.post(
        "/api/v1/admin/oauth/clients",
        &w.root.access,
        Some(json!({
            "name": "robot",
            "confidential": true,
            "allowed_grants": ["client_credentials"],
            "allowed_scopes": ["admin"],
        })),
    );
    assert_eq!(c.status, 201, "{}", c.text);
    let r = w.client_credentials(
        c.body["client_id"].as_str().unwrap(),
        c.body["client_secret"].as_str().unwrap(),
        "admin",
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"], "invalid_scope", "{}", r.text);
    // `devices` acts for a person too.
    let r = w.client_credentials(&w.svc, &w.svc_secret, "devices");
    assert_eq!(r.body["error"], "invalid_scope", "{}", r.text);
    // Without the reserved scopes the client gets its token, which opens no API route.
    let r = w.client_credentials(&w.svc, &w.svc_secret, "extra");
    assert_eq!(r.status, 200, "{}", r.text);
    let token = r.body["access_token"].as_str().unwrap();
    let r = w.post(
        "/api/v1/admin/users",
        token,
        Some(json!({ "username": "mallory", "password": "long enough", "is_admin": true })),
    );
    assert_error(&r, 403, "forbidden");
}
