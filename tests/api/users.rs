//! `/api/v1/admin/users`: create, list, get, update (admin, disabled, password), delete, and
//! the last enabled administrator who cannot go.

use serde_json::{json, Value};

use crate::harness::{assert_bad_field, assert_error, keys, World};

const FIELDS: [&str; 6] = [
    "created", "disabled", "id", "is_admin", "updated", "username",
];

fn create(w: &World, body: Value) -> Value {
    let r = w.post("/api/v1/admin/users", &w.root.access, Some(body));
    assert_eq!(r.status, 201, "{}", r.text);
    r.body
}

fn usernames(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|u| u["username"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn create_list_get_update_delete() {
    let w = World::new();
    let carol = create(&w, json!({ "username": "carol", "password": "12345678" }));
    assert_eq!(keys(&carol), FIELDS, "never a password or its hash");
    assert_eq!(carol["username"], "carol");
    assert_eq!(carol["is_admin"], false);
    assert_eq!(carol["disabled"], false);
    let dave = create(
        &w,
        json!({ "username": "dave", "password": "p".repeat(1024), "is_admin": true }),
    );
    assert_eq!(dave["is_admin"], true);
    // The API's users are real users: dave can approve a device.
    let t = w.login(&w.cli, "dave", "devices admin");
    assert_eq!(t.scope, "admin devices");

    let r = w.post(
        "/api/v1/admin/users",
        &w.root.access,
        Some(json!({ "username": "CAROL", "password": "whatever1" })),
    );
    assert_error(&r, 409, "conflict");

    let page = w.get("/api/v1/admin/users", &w.root.access);
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(keys(&page.body), ["items", "limit", "offset", "total"]);
    assert_eq!(page.body["total"], 3);
    assert_eq!(usernames(&page.body), ["carol", "dave", "root"]);
    for u in page.body["items"].as_array().unwrap() {
        assert_eq!(keys(u), FIELDS);
    }
    let p = w.get("/api/v1/admin/users?limit=1&offset=1", &w.root.access);
    assert_eq!(usernames(&p.body), ["dave"]);
    assert_eq!(p.body["total"], 3);
    let p = w.get("/api/v1/admin/users?offset=3", &w.root.access);
    assert_eq!(
        (p.body["items"].clone(), p.body["total"].clone()),
        (json!([]), json!(3))
    );
    assert_bad_field(
        &w.get("/api/v1/admin/users?limit=0", &w.root.access),
        "limit",
    );
    assert_bad_field(
        &w.get("/api/v1/admin/users?limit=1001", &w.root.access),
        "limit",
    );

    let id = carol["id"].as_str().unwrap();
    let path = format!("/api/v1/admin/users/{id}");
    let got = w.get(&path, &w.root.access);
    assert_eq!(got.body, carol);

    let r = w.patch(&path, &w.root.access, json!({ "is_admin": true }));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), FIELDS);
    assert_eq!(r.body["is_admin"], true);
    let r = w.patch(
        &path,
        &w.root.access,
        json!({ "password": "a new long password" }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = w.patch(&path, &w.root.access, json!({}));
    assert_eq!(r.body["is_admin"], true, "an empty change changes nothing");
    assert_eq!(w.get(&path, &w.root.access).body["is_admin"], true);

    let r = w.delete(&path, &w.root.access);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({ "id": id, "deleted": true }));
    assert_error(&w.get(&path, &w.root.access), 404, "not_found");
    assert_error(&w.delete(&path, &w.root.access), 404, "not_found");
    assert_error(
        &w.patch(&path, &w.root.access, json!({ "disabled": true })),
        404,
        "not_found",
    );
    assert_error(
        &w.get("/api/v1/admin/users/not-a-user", &w.root.access),
        404,
        "not_found",
    );
}

/// The PATCH answer is the user as stored, `updated` included.
#[test]
fn patch_answers_the_new_updated_time() {
    let w = World::new();
    let u = create(
        &w,
        json!({ "username": "clock", "password": "long enough" }),
    );
    let path = format!("/api/v1/admin/users/{}", u["id"].as_str().unwrap());
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let r = w.patch(&path, &w.root.access, json!({ "is_admin": true }));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_ne!(r.body["updated"], u["updated"], "{}", r.text);
    assert_eq!(w.get(&path, &w.root.access).body, r.body);
}

#[test]
fn user_validation() {
    let w = World::new();
    let post = |body: Value| w.post("/api/v1/admin/users", &w.root.access, Some(body));
    assert_bad_field(&post(json!({ "password": "long enough" })), "username");
    assert_bad_field(
        &post(json!({ "username": "", "password": "long enough" })),
        "username",
    );
    assert_bad_field(
        &post(json!({ "username": "a b", "password": "long enough" })),
        "username",
    );
    assert_bad_field(
        &post(json!({ "username": "u".repeat(65), "password": "long enough" })),
        "username",
    );
    assert_bad_field(
        &post(json!({ "username": 7, "password": "long enough" })),
        "username",
    );
    assert_bad_field(&post(json!({ "username": "eve" })), "password");
    assert_bad_field(
        &post(json!({ "username": "eve", "password": "1234567" })),
        "password",
    );
    assert_bad_field(
        &post(json!({ "username": "eve", "password": "p".repeat(1025) })),
        "password",
    );
    assert_bad_field(
        &post(json!({ "username": "eve", "password": 12345678 })),
        "password",
    );
    assert_bad_field(
        &post(json!({ "username": "eve", "password": "long enough", "is_admin": "no" })),
        "is_admin",
    );
    assert_bad_field(
        &post(json!({ "username": "eve", "password": "long enough", "email": "e@x" })),
        "email",
    );
    let u = create(
        &w,
        json!({ "username": "u".repeat(64), "password": "long enough" }),
    );
    let path = format!("/api/v1/admin/users/{}", u["id"].as_str().unwrap());
    let patch = |body: Value| w.patch(&path, &w.root.access, body);
    assert_bad_field(&patch(json!({ "password": "short" })), "password");
    assert_bad_field(&patch(json!({ "password": null })), "password");
    assert_bad_field(&patch(json!({ "disabled": "no" })), "disabled");
    assert_bad_field(&patch(json!({ "is_admin": 1 })), "is_admin");
    assert_bad_field(&patch(json!({ "username": "renamed" })), "username");
    // Nothing changed.
    assert_eq!(w.get(&path, &w.root.access).body, u);
    // Only the root user and this one exist.
    assert_eq!(
        w.get("/api/v1/admin/users", &w.root.access).body["total"],
        2
    );
}

#[test]
fn disabling_a_user_stops_their_devices() {
    let w = World::new();
    let (alice_id, a) = w.user("alice");
    assert!(w.active(&a.access));
    let path = format!("/api/v1/admin/users/{alice_id}");

    let r = w.patch(&path, &w.root.access, json!({ "disabled": true }));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["disabled"], true);

    let refused = w.refresh(&w.cli, &a.refresh);
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.body["error"], "invalid_grant");
    assert!(!w.active(&a.access), "introspection must say inactive");
    assert_error(&w.get("/api/v1/devices", &a.access), 401, "unauthenticated");
    // A disabled user cannot approve either.
    let s = w.start_device(&w.cli, "devices", "new");
    let out = w.cli(
        &["device", "approve", &s.user_code, "--user", "alice"],
        None,
    );
    assert!(!out.status.success(), "a disabled user approved a device");

    // Enabling restores the same tokens.
    let r = w.patch(&path, &w.root.access, json!({ "disabled": false }));
    assert_eq!(r.body["disabled"], false);
    assert!(w.active(&a.access));
    assert_eq!(w.get("/api/v1/devices", &a.access).status, 200);
    let r = w.refresh(&w.cli, &a.refresh);
    assert_eq!(r.status, 200, "{}", r.text);
}

#[test]
fn deleting_a_user_removes_their_devices_and_clients() {
    let w = World::new();
    let (alice_id, a) = w.user("alice");
    let owned = w.post(
        "/api/v1/admin/oauth/clients",
        &w.root.access,
        Some(json!({ "name": "alice's", "owner_user_id": alice_id })),
    );
    assert_eq!(owned.status, 201, "{}", owned.text);
    let r = w.delete(&format!("/api/v1/admin/users/{alice_id}"), &w.root.access);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_error(&w.get("/api/v1/devices", &a.access), 401, "unauthenticated");
    assert_eq!(w.refresh(&w.cli, &a.refresh).body["error"], "invalid_grant");
    let r = w.get(&format!("/api/v1/devices/{}", a.device_id), &w.root.access);
    assert_error(&r, 404, "not_found");
    let r = w.get(
        &format!(
            "/api/v1/admin/oauth/clients/{}",
            owned.body["client_id"].as_str().unwrap()
        ),
        &w.root.access,
    );
    assert_error(&r, 404, "not_found");
}

#[test]
fn the_last_enabled_admin_stays() {
    let w = World::new();
    let root = format!("/api/v1/admin/users/{}", w.root_id);
    for change in [json!({ "is_admin": false }), json!({ "disabled": true })] {
        let r = w.patch(&root, &w.root.access, change);
        assert_error(&r, 409, "conflict");
    }
    assert_error(&w.delete(&root, &w.root.access), 409, "conflict");
    // A disabled admin does not count.
    let other = create(
        &w,
        json!({ "username": "root2", "password": "long enough", "is_admin": true }),
    );
    let other_path = format!("/api/v1/admin/users/{}", other["id"].as_str().unwrap());
    let r = w.patch(&other_path, &w.root.access, json!({ "disabled": true }));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_error(
        &w.patch(&root, &w.root.access, json!({ "is_admin": false })),
        409,
        "conflict",
    );
    assert_error(&w.delete(&root, &w.root.access), 409, "conflict");
    let r = w.get(&root, &w.root.access);
    assert_eq!(
        (r.body["is_admin"].clone(), r.body["disabled"].clone()),
        (json!(true), json!(false))
    );

    // With a second enabled admin, root may step down.
    let r = w.patch(&other_path, &w.root.access, json!({ "disabled": false }));
    assert_eq!(r.body["disabled"], false);
    let r = w.patch(&root, &w.root.access, json!({ "is_admin": false }));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["is_admin"], false);
}
