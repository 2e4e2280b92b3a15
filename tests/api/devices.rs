//! `/api/v1/devices`: listing, filters, pagination, lookup by id and by pending user code,
//! update, lock, delete and verify — and whose devices each caller may touch.

use serde_json::{json, Value};

use crate::harness::{assert_bad_field, assert_error, keys, World, USER_AGENT};

const DEVICE_FIELDS: [&str; 17] = [
    "city",
    "client_id",
    "country",
    "created",
    "device_metadata",
    "expires",
    "hostname",
    "id",
    "ip_address",
    "last_login",
    "name",
    "os",
    "region",
    "status",
    "trusted_device",
    "updated",
    "user_id",
];

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|d| d["id"].as_str().expect("id").to_string())
        .collect()
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.len() == 20 && s.ends_with('Z') && s.as_bytes()[4] == b'-' && s.as_bytes()[10] == b'T'
    })
}

#[test]
fn list_shows_own_devices_and_admins_see_everyones() {
    let w = World::new();
    let (alice_id, a1) = w.user("alice");
    let a2 = w.login_named(&w.cli, "alice", "devices", "alice-tv", true);
    let (bob_id, b1) = w.user("bob");
    // A pending device belongs to no one and is never listed.
    w.start_device(&w.cli, "devices", "unclaimed");

    let page = w.get("/api/v1/devices", &a1.access);
    assert_eq!(page.status, 200, "{}", page.text);
    assert_eq!(keys(&page.body), ["items", "limit", "offset", "total"]);
    assert_eq!(page.body["total"], 2);
    assert_eq!(page.body["offset"], 0);
    assert_eq!(page.body["limit"], 100);
    // Newest first.
    assert_eq!(
        ids(&page.body),
        [a2.device_id.as_str(), a1.device_id.as_str()]
    );

    let tv = &page.body["items"][0];
    assert_eq!(keys(tv), DEVICE_FIELDS);
    assert_eq!(tv["name"], "alice-tv");
    assert_eq!(tv["user_id"], alice_id.as_str());
    assert_eq!(tv["client_id"], w.cli.as_str());
    assert_eq!(tv["status"], "active");
    assert_eq!(tv["trusted_device"], true);
    assert_eq!(tv["os"], "linux");
    assert_eq!(tv["hostname"], "alice-tv.local");
    assert_eq!(tv["ip_address"], "127.0.0.1");
    for nullable in ["city", "region", "country"] {
        assert_eq!(tv[nullable], Value::Null);
    }
    for time in ["created", "updated", "expires", "last_login"] {
        assert!(is_rfc3339(&tv[time]), "{time}: {}", tv[time]);
    }
    assert_eq!(tv["device_metadata"], json!({ "user_agent": USER_AGENT }));

    let page = w.get("/api/v1/devices", &b1.access);
    assert_eq!(page.body["total"], 1);
    assert_eq!(ids(&page.body), [b1.device_id.as_str()]);

    // The admin sees root's, alice's and bob's devices; not the pending one.
    let page = w.get("/api/v1/devices", &w.root.access);
    assert_eq!(page.status, 200);
    assert_eq!(page.body["total"], 4);
    let all = ids(&page.body);
    for d in [
        &w.root.device_id,
        &a1.device_id,
        &a2.device_id,
        &b1.device_id,
    ] {
        assert!(all.contains(d), "{d} missing from {all:?}");
    }
    let page = w.get(&format!("/api/v1/devices?user_id={bob_id}"), &w.root.access);
    assert_eq!(ids(&page.body), [b1.device_id.as_str()]);

    // Only an admin may name another user.
    let r = w.get(&format!("/api/v1/devices?user_id={bob_id}"), &a1.access);
    assert_error(&r, 403, "forbidden");
    let r = w.get(&format!("/api/v1/devices?user_id={alice_id}"), &a1.access);
    assert_eq!(r.body["total"], 2);

    // An admin's token without the `admin` scope is an ordinary user's.
    let root_devices_only = w.login(&w.cli, "root", "devices");
    let page = w.get("/api/v1/devices", &root_devices_only.access);
    assert_eq!(page.body["total"], 2, "{}", page.text);
    let r = w.get(
        &format!("/api/v1/devices?user_id={alice_id}"),
        &root_devices_only.access,
    );
    assert_error(&r, 403, "forbidden");
}

#[test]
fn list_filters() {
    let w = World::new();
    let (other_client, _) = w.add_client("other", "devices", &[]);
    let (_, active) = w.user("alice");
    let trusted = w.login_named(&other_client, "alice", "devices", "trusted", true);
    let s = w.start_device(&w.cli, "devices", "approved-only");
    w.approve(&s.user_code, "alice", false);
    let verified = w.get("/api/v1/devices?status=verified", &active.access);
    assert_eq!(verified.status, 200, "{}", verified.text);
    assert_eq!(verified.body["total"], 1);
    assert_eq!(verified.body["items"][0]["name"], "approved-only");
    assert_eq!(verified.body["items"][0]["last_login"], Value::Null);

    let q = |query: &str| {
        let r = w.get(&format!("/api/v1/devices?{query}"), &active.access);
        assert_eq!(r.status, 200, "{query}: {}", r.text);
        ids(&r.body)
    };
    assert_eq!(q("status=active").len(), 2);
    assert_eq!(q("status=locked").len(), 0);
    assert_eq!(q("status=pending").len(), 0);
    assert_eq!(q("trusted_device=true"), [trusted.device_id.as_str()]);
    assert_eq!(q("trusted_device=false").len(), 2);
    assert_eq!(
        q(&format!("client_id={other_client}")),
        [trusted.device_id.as_str()]
    );
    assert_eq!(
        q(&format!("client_id={}&status=active", w.cli)),
        [active.device_id.as_str()]
    );
    assert_eq!(q("client_id=nope").len(), 0);
    // Unknown parameters are ignored.
    assert_eq!(q("colour=blue").len(), 3);

    let r = w.get("/api/v1/devices?status=sleeping", &active.access);
    assert_bad_field(&r, "status");
    let r = w.get("/api/v1/devices?trusted_device=yes", &active.access);
    assert_bad_field(&r, "trusted_device");
    let r = w.get(
        "/api/v1/devices?status=active&status=locked",
        &active.access,
    );
    assert_bad_field(&r, "status");
}

#[test]
fn pagination_edges() {
    let w = World::new();
    let (_, t) = w.user("alice");
    w.login(&w.cli, "alice", "devices");
    w.login(&w.cli, "alice", "devices");
    let all = ids(&w.get("/api/v1/devices", &t.access).body);
    assert_eq!(all.len(), 3);

    for bad in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "limit=1.5",
        "limit=",
    ] {
        let r = w.get(&format!("/api/v1/devices?{bad}"), &t.access);
        assert_bad_field(&r, "limit");
    }
    for bad in ["offset=-1", "offset=x", "offset=4294967296"] {
        let r = w.get(&format!("/api/v1/devices?{bad}"), &t.access);
        assert_bad_field(&r, "offset");
    }
    let r = w.get("/api/v1/devices?limit=1&limit=2", &t.access);
    assert_bad_field(&r, "limit");

    let r = w.get("/api/v1/devices?limit=1000", &t.access);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["limit"], 1000);
    let r = w.get("/api/v1/devices?limit=1", &t.access);
    assert_eq!(ids(&r.body), [all[0].as_str()]);
    assert_eq!(
        (r.body["total"].clone(), r.body["limit"].clone()),
        (json!(3), json!(1))
    );
    let r = w.get("/api/v1/devices?limit=1&offset=2", &t.access);
    assert_eq!(ids(&r.body), [all[2].as_str()]);
    assert_eq!(r.body["offset"], 2);
    let r = w.get("/api/v1/devices?limit=2&offset=1", &t.access);
    assert_eq!(ids(&r.body), all[1..].to_vec());
    for past in ["offset=3", "offset=1000", "offset=4294967295"] {
        let r = w.get(&format!("/api/v1/devices?{past}"), &t.access);
        assert_eq!(r.status, 200, "{past}: {}", r.text);
        assert_eq!(r.body["items"], json!([]), "{past}");
        assert_eq!(r.body["total"], 3, "{past}");
    }
}

#[test]
fn get_by_id_only_for_the_owner_or_an_admin() {
    let w = World::new();
    let (_, a) = w.user("alice");
    let (_, b) = w.user("bob");
    let path = format!("/api/v1/devices/{}", a.device_id);

    let own = w.get(&path, &a.access);
    assert_eq!(own.status, 200, "{}", own.text);
    assert_eq!(keys(&own.body), DEVICE_FIELDS);
    assert_eq!(own.body["id"], a.device_id.as_str());
    let listed = w.get("/api/v1/devices", &a.access).body["items"][0].clone();
    assert_eq!(own.body, listed);

    // Someone else's device does not exist, as far as bob can tell.
    let r = w.get(&path, &b.access);
    assert_error(&r, 404, "not_found");
    let unknown = w.get(
        "/api/v1/devices/00000000-0000-4000-8000-000000000000",
        &b.access,
    );
    assert_error(&unknown, 404, "not_found");
    assert_eq!(r.body, unknown.body, "a 404 that reveals nothing");
    assert_error(
        &w.get("/api/v1/devices/not-a-device", &b.access),
        404,
        "not_found",
    );

    let r = w.get(&path, &w.root.access);
    assert_eq!(r.status, 200);
    assert_eq!(r.body["id"], a.device_id.as_str());
}

#[test]
fn get_by_pending_user_code() {
    let w = World::new();
    let (_, bob) = w.user("bob");
    let s = w.start_device(&w.cli, "devices", "kiosk");

    // Any signed-in user may look a pending device up by its code, in any spelling.
    let r = w.get(&format!("/api/v1/devices/{}", s.user_code), &bob.access);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), DEVICE_FIELDS);
    assert_eq!(r.body["status"], "pending");
    assert_eq!(r.body["user_id"], Value::Null);
    assert_eq!(r.body["name"], "kiosk");
    assert_eq!(r.body["last_login"], Value::Null);
    let id = r.body["id"].as_str().expect("id").to_string();
    let loose = s.user_code.replace('-', "").to_lowercase();
    let r = w.get(&format!("/api/v1/devices/{loose}"), &bob.access);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["id"], id.as_str());

    // By id it is nobody's yet: a 404 for bob, visible to an admin.
    assert_error(
        &w.get(&format!("/api/v1/devices/{id}"), &bob.access),
        404,
        "not_found",
    );
    let r = w.get(&format!("/api/v1/devices/{id}"), &w.root.access);
    assert_eq!(r.body["status"], "pending");

    // Once approved the code finds nothing.
    w.approve(&s.user_code, "root", false);
    let r = w.get(&format!("/api/v1/devices/{}", s.user_code), &bob.access);
    assert_error(&r, 404, "not_found");
    let r = w.get("/api/v1/devices/BBBB-BBBB", &bob.access);
    assert_error(&r, 404, "not_found");
}

#[test]
fn update_name_and_metadata() {
    let w = World::new();
    let (_, a) = w.user("alice");
    let (_, b) = w.user("bob");
    let path = format!("/api/v1/devices/{}", a.device_id);

    let r = w.put(
        &path,
        &a.access,
        json!({ "name": "  work laptop ", "device_metadata": { "team": "infra", "n": [1, 2] } }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), DEVICE_FIELDS);
    assert_eq!(r.body["name"], "work laptop");
    assert_eq!(
        r.body["device_metadata"],
        json!({ "team": "infra", "n": [1, 2] })
    );
    assert_eq!(r.body["status"], "active");
    assert_eq!(w.get(&path, &a.access).body, r.body);

    // Absent fields stay; null clears the name; null metadata leaves it.
    let r = w.put(&path, &a.access, json!({}));
    assert_eq!(r.body["name"], "work laptop");
    let r = w.put(
        &path,
        &a.access,
        json!({ "name": null, "device_metadata": null }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["name"], Value::Null);
    assert_eq!(r.body["device_metadata"]["team"], "infra");

    // Bob cannot touch it; an admin can.
    assert_error(
        &w.put(&path, &b.access, json!({ "name": "mine" })),
        404,
        "not_found",
    );
    let r = w.put(&path, &w.root.access, json!({ "name": "named by admin" }));
    assert_eq!(r.body["name"], "named by admin");
    let r = w.put(
        "/api/v1/devices/00000000-0000-4000-8000-000000000000",
        &a.access,
        json!({ "name": "x" }),
    );
    assert_error(&r, 404, "not_found");

    // Validation names the field.
    assert_bad_field(
        &w.put(&path, &a.access, json!({ "status": "active" })),
        "status",
    );
    assert_bad_field(&w.put(&path, &a.access, json!({ "name": 5 })), "name");
    assert_bad_field(
        &w.put(&path, &a.access, json!({ "name": "x".repeat(101) })),
        "name",
    );
    assert_bad_field(
        &w.put(&path, &a.access, json!({ "name": "a\u{7}b" })),
        "name",
    );
    assert_bad_field(
        &w.put(&path, &a.access, json!({ "device_metadata": [1] })),
        "device_metadata",
    );
    assert_bad_field(
        &w.put(
            &path,
            &a.access,
            json!({ "device_metadata": { "k": "v".repeat(5000) } }),
        ),
        "device_metadata",
    );
    assert_bad_field(
        &w.put(&path, &a.access, json!({ "locked": "yes" })),
        "locked",
    );
    assert_bad_field(&w.put(&path, &a.access, json!([])), "body");
    let r = w.put(&path, &a.access, json!({ "name": "x".repeat(100) }));
    assert_eq!(r.status, 200, "100 characters are allowed: {}", r.text);
}

#[test]
fn lock_stops_refresh_introspection_and_api_until_unlocked() {
    let w = World::new();
    let (_, a1) = w.user("alice");
    let a2 = w.login(&w.cli, "alice", "devices");
    assert!(w.active(&a1.access));
    let path = format!("/api/v1/devices/{}", a1.device_id);

    let r = w.put(&path, &a2.access, json!({ "locked": true }));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["status"], "locked");
    let refused = w.refresh(&w.cli, &a1.refresh);
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.body["error"], "invalid_grant");
    assert!(!w.active(&a1.access), "a locked device's token is inactive");
    assert_error(
        &w.get("/api/v1/devices", &a1.access),
        401,
        "unauthenticated",
    );
    let listed = w.get("/api/v1/devices?status=locked", &a2.access);
    assert_eq!(ids(&listed.body), [a1.device_id.as_str()]);

    // Unlocking restores the same tokens.
    let r = w.put(&path, &a2.access, json!({ "locked": false }));
    assert_eq!(r.body["status"], "active");
    assert!(w.active(&a1.access));
    assert_eq!(w.get("/api/v1/devices", &a1.access).status, 200);
    let r = w.refresh(&w.cli, &a1.refresh);
    assert_eq!(r.status, 200, "refresh after unlock: {}", r.text);

    // An admin may lock anyone's device; a pending device cannot be locked.
    let r = w.put(&path, &w.root.access, json!({ "locked": true }));
    assert_eq!(r.body["status"], "locked");
    let s = w.start_device(&w.cli, "devices", "pending");
    let pending = w.get(&format!("/api/v1/devices/{}", s.user_code), &a2.access);
    let pending_path = format!("/api/v1/devices/{}", pending.body["id"].as_str().unwrap());
    let r = w.put(&pending_path, &w.root.access, json!({ "locked": true }));
    assert_error(&r, 409, "conflict");
}

#[test]
fn delete_removes_the_device_and_revokes_its_tokens() {
    let w = World::new();
    let (_, a1) = w.user("alice");
    let a2 = w.login(&w.cli, "alice", "devices");
    let (_, b) = w.user("bob");
    let path = format!("/api/v1/devices/{}", a1.device_id);

    assert_error(&w.delete(&path, &b.access), 404, "not_found");
    assert_eq!(
        w.get(&path, &a2.access).status,
        200,
        "bob's DELETE did nothing"
    );

    let r = w.delete(&path, &a2.access);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({ "id": a1.device_id, "deleted": true }));
    assert_error(&w.get(&path, &a2.access), 404, "not_found");
    assert_error(&w.delete(&path, &a2.access), 404, "not_found");
    let refused = w.refresh(&w.cli, &a1.refresh);
    assert_eq!(refused.body["error"], "invalid_grant", "{}", refused.text);
    assert!(!w.active(&a1.access));
    assert_error(
        &w.get("/api/v1/devices", &a1.access),
        401,
        "unauthenticated",
    );
    assert_eq!(w.get("/api/v1/devices", &a2.access).body["total"], 1);

    // An admin removes anyone's device.
    let r = w.delete(&format!("/api/v1/devices/{}", b.device_id), &w.root.access);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_error(&w.get("/api/v1/devices", &b.access), 401, "unauthenticated");
}

#[test]
fn verify_approves_and_the_device_gets_tokens() {
    let w = World::new();
    let (alice_id, a) = w.user("alice");
    let s = w.start_device(&w.cli, "devices extra", "console");
    let r = w.poll(&w.cli, &s.device_code);
    assert_eq!(r.body["error"], "authorization_pending", "{}", r.text);

    let typed = s.user_code.replace('-', "").to_lowercase();
    let r = w.put(
        "/api/v1/devices/verify",
        &a.access,
        json!({ "user_code": typed, "trusted_device": true }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), DEVICE_FIELDS);
    assert_eq!(r.body["status"], "verified");
    assert_eq!(r.body["user_id"], alice_id.as_str());
    assert_eq!(r.body["trusted_device"], true);
    assert_eq!(r.body["name"], "console");
    let device_id = r.body["id"].as_str().unwrap().to_string();

    let got = w.exchange(&w.cli, &s.device_code);
    assert_eq!(got.device_id, device_id);
    assert_eq!(got.scope, "devices extra");
    let r = w.get(&format!("/api/v1/devices/{device_id}"), &a.access);
    assert_eq!(r.body["status"], "active");
    assert!(r.body["last_login"].is_string());

    // The code is spent.
    let again = w.put(
        "/api/v1/devices/verify",
        &a.access,
        json!({ "user_code": s.user_code }),
    );
    let meta = assert_error(&again, 422, "unprocessable");
    assert_eq!(meta, json!({ "field": "user_code" }));
    let unknown = w.put(
        "/api/v1/devices/verify",
        &a.access,
        json!({ "user_code": "BBBB-BBBB" }),
    );
    assert_error(&unknown, 404, "not_found");
    let r = w.put(
        "/api/v1/devices/verify",
        &a.access,
        json!({ "user_code": "" }),
    );
    // Not a code at all: a 400 naming the field (issue 21), not a lookup.
    let meta = assert_error(&r, 400, "bad_request");
    assert_eq!(meta, json!({ "field": "user_code" }));

    // A denied code cannot be approved.
    let denied = w.start_device(&w.cli, "devices", "denied");
    w.cli_ok(&["device", "deny", &denied.user_code], None);
    let r = w.put(
        "/api/v1/devices/verify",
        &a.access,
        json!({ "user_code": denied.user_code }),
    );
    assert_error(&r, 422, "unprocessable");

    // Validation.
    assert_bad_field(
        &w.put("/api/v1/devices/verify", &a.access, json!({})),
        "user_code",
    );
    assert_bad_field(
        &w.put(
            "/api/v1/devices/verify",
            &a.access,
            json!({ "user_code": 7 }),
        ),
        "user_code",
    );
    assert_bad_field(
        &w.put(
            "/api/v1/devices/verify",
            &a.access,
            json!({ "user_code": null }),
        ),
        "user_code",
    );
    assert_bad_field(
        &w.put(
            "/api/v1/devices/verify",
            &a.access,
            json!({ "user_code": "BBBB-BBBB", "trusted_device": "yes" }),
        ),
        "trusted_device",
    );
    assert_bad_field(
        &w.put(
            "/api/v1/devices/verify",
            &a.access,
            json!({ "user_code": "BBBB-BBBB", "user_id": alice_id }),
        ),
        "user_id",
    );
}

#[test]
fn verify_of_an_admin_scope_needs_an_admin() {
    let w = World::new();
    let (_, a) = w.user("alice");
    let s = w.start_device(&w.cli, "admin devices", "admin-tool");
    let r = w.put(
        "/api/v1/devices/verify",
        &a.access,
        json!({ "user_code": s.user_code }),
    );
    assert_error(&r, 403, "forbidden");
    // Still pending: the admin can approve it.
    let r = w.put(
        "/api/v1/devices/verify",
        &w.root.access,
        json!({ "user_code": s.user_code }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["user_id"], w.root_id.as_str());
    assert_eq!(r.body["trusted_device"], false);
    let t = w.exchange(&w.cli, &s.device_code);
    assert_eq!(t.scope, "admin devices");
}

/// RFC 8628 §5.1: failed code entries are limited per address (limits.code_entry_failures_per_
/// minute, 5 by default) with 429 + Retry-After; a success does not count; polling is untouched.
#[test]
fn failed_code_entries_are_limited_per_address() {
    let w = World::new();
    let (_, a) = w.user("alice");
    let s = w.start_device(&w.cli, "devices", "tv");
    for guess in ["BBBB-BBBB", "CCCC-CCCC", "DDDD-DDDD"] {
        let r = w.put(
            "/api/v1/devices/verify",
            &a.access,
            json!({ "user_code": guess }),
        );
        assert_error(&r, 404, "not_found");
    }
    // Lookups by user code count too.
    for guess in ["FFFF-FFFF", "GGGG-GGGG"] {
        assert_error(
            &w.get(&format!("/api/v1/devices/{guess}"), &a.access),
            404,
            "not_found",
        );
    }
    // The sixth attempt is refused before it is checked, even with the right code.
    let r = w.put(
        "/api/v1/devices/verify",
        &a.access,
        json!({ "user_code": s.user_code }),
    );
    let meta = assert_error(&r, 429, "too_many_requests");
    let wait: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "Retry-After {wait}");
    assert_eq!(meta["retry_after"], wait);
    // The device's polling is not slowed by the person's mistakes.
    assert_eq!(
        w.poll(&w.cli, &s.device_code).body["error"],
        "authorization_pending"
    );
}

/// ZenML's verify names the device: wrong codes for it are counted in failed_auth_attempts and
/// the device is locked (its code denied) at oauth.max_failed_code_attempts.
#[test]
fn wrong_codes_for_a_named_device_lock_it() {
    let w = World::with_env(&[
        ("HALLPASS_OAUTH_MAX_FAILED_CODE_ATTEMPTS", "2"),
        ("HALLPASS_LIMITS_CODE_ENTRY_FAILURES_PER_MINUTE", "0"),
    ]);
    let (_, a) = w.user("alice");
    let s = w.start_device(&w.cli, "devices", "tv");
    let id = w
        .get(&format!("/api/v1/devices/{}", s.user_code), &a.access)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let wrong = json!({ "user_code": "BBBB-BBBB", "device_id": id });
    let r = w.put("/api/v1/devices/verify", &a.access, wrong.clone());
    assert_error(&r, 422, "unprocessable");
    assert!(
        r.body["message"].as_str().unwrap().contains("1 more"),
        "{}",
        r.text
    );
    let r = w.put("/api/v1/devices/verify", &a.access, wrong);
    assert_error(&r, 422, "unprocessable");
    assert!(
        r.body["message"].as_str().unwrap().contains("locked"),
        "{}",
        r.text
    );
    // Now even the right code is refused, and the device is told no.
    let r = w.put(
        "/api/v1/devices/verify",
        &a.access,
        json!({ "user_code": s.user_code, "device_id": id }),
    );
    assert_error(&r, 404, "not_found");
    let r = w.put(
        "/api/v1/devices/verify",
        &a.access,
        json!({ "user_code": s.user_code }),
    );
    assert_error(&r, 422, "unprocessable");
    assert_eq!(
        w.poll(&w.cli, &s.device_code).body["error"],
        "access_denied"
    );
    // The admin sees the denied authorization (the device was never claimed, so it is in no
    // user's list).
    let rows = w.get(
        "/api/v1/admin/oauth/device-authorizations?state=denied",
        &w.root.access,
    );
    let list = rows.body["device_authorisations"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{}", rows.text);
    assert_eq!(list[0]["user_code"], s.user_code.as_str());

    // The right code for a named device approves it.
    let s = w.start_device(&w.cli, "devices", "radio");
    let id = w
        .get(&format!("/api/v1/devices/{}", s.user_code), &a.access)
        .body["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = w.put(
        "/api/v1/devices/verify",
        &a.access,
        json!({ "user_code": s.user_code.to_lowercase(), "device_id": id }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}
