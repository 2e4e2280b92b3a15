//! `/api/v1/admin/oauth/device-authorizations`: Storyden's list with its filters, and deny.

use serde_json::{json, Value};

use crate::harness::{assert_bad_field, assert_error, keys, World};

const FIELDS: [&str; 12] = [
    "approved_at",
    "approved_by_account_id",
    "client_id",
    "consumed_at",
    "createdAt",
    "denied_at",
    "expires_at",
    "id",
    "last_polled_at",
    "poll_interval_seconds",
    "scope",
    "user_code",
];

fn list(w: &World, query: &str) -> Value {
    let r = w.get(
        &format!("/api/v1/admin/oauth/device-authorizations?{query}"),
        &w.root.access,
    );
    assert_eq!(r.status, 200, "{query}: {}", r.text);
    assert_eq!(
        keys(&r.body),
        ["device_authorisations", "limit", "offset", "total"]
    );
    r.body
}

fn items(page: &Value) -> &Vec<Value> {
    page["device_authorisations"].as_array().expect("array")
}

fn codes(page: &Value) -> Vec<String> {
    items(page)
        .iter()
        .map(|a| a["user_code"].as_str().expect("user_code").to_string())
        .collect()
}

fn is_user_code(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 9
        && b[4] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || b"BCDFGHJKLMNPQRSTVWXZ".contains(c))
}

#[test]
fn list_with_state_and_client_filters() {
    let w = World::new();
    let (alice_id, _) = w.user("alice"); // consumed, cli
    let (other, _) = w.add_client("other", "devices", &[]);
    let pending = w.start_device(&w.cli, "devices extra", "pending-one");
    let approved = w.start_device(&w.cli, "devices", "approved-one");
    w.approve(&approved.user_code, "alice", false);
    let denied = w.start_device(&other, "devices", "denied-one");
    w.cli_ok(&["device", "deny", &denied.user_code], None);
    let pending2 = w.start_device(&other, "", "pending-two");

    let all = list(&w, "");
    assert_eq!(all["total"], 6, "root's and alice's logins and four more");
    assert_eq!(
        (all["offset"].clone(), all["limit"].clone()),
        (json!(0), json!(100))
    );
    assert_eq!(codes(&all)[0], pending2.user_code, "newest first");
    for a in items(&all) {
        assert_eq!(keys(a), FIELDS);
        assert!(is_user_code(a["user_code"].as_str().unwrap()), "{a}");
        assert!(a["createdAt"].as_str().unwrap().ends_with('Z'));
        assert!(a["expires_at"].as_str().unwrap().ends_with('Z'));
        assert_eq!(a["poll_interval_seconds"], 5, "oauth.poll_interval");
    }

    let p = list(&w, "state=pending");
    assert_eq!(p["total"], 2);
    let p = list(&w, &format!("state=pending&client_id={}", w.cli));
    assert_eq!(codes(&p), [pending.user_code.as_str()]);
    let a = &items(&p)[0];
    assert_eq!(a["client_id"], w.cli.as_str());
    assert_eq!(a["scope"], "devices extra");
    for empty in [
        "approved_by_account_id",
        "approved_at",
        "denied_at",
        "consumed_at",
    ] {
        assert_eq!(a[empty], Value::Null, "{empty}");
    }
    let p = list(&w, &format!("state=pending&client_id={other}"));
    assert_eq!(codes(&p), [pending2.user_code.as_str()]);
    assert_eq!(items(&p)[0]["scope"], "");

    let p = list(&w, "state=approved");
    assert_eq!(codes(&p), [approved.user_code.as_str()]);
    let a = &items(&p)[0];
    assert_eq!(a["approved_by_account_id"], alice_id.as_str());
    assert!(a["approved_at"].is_string());
    assert_eq!(a["consumed_at"], Value::Null);

    let p = list(&w, "state=consumed");
    assert_eq!(p["total"], 2);
    for a in items(&p) {
        assert!(
            a["approved_at"].is_string() && a["consumed_at"].is_string(),
            "{a}"
        );
        assert_eq!(a["client_id"], w.cli.as_str());
    }
    assert_eq!(
        list(&w, &format!("state=consumed&client_id={other}"))["total"],
        0
    );

    let p = list(&w, "state=denied");
    assert_eq!(codes(&p), [denied.user_code.as_str()]);
    let a = &items(&p)[0];
    assert!(a["denied_at"].is_string());
    assert_eq!(a["approved_at"], Value::Null);
    assert_eq!(
        a["approved_by_account_id"],
        Value::Null,
        "denied from the CLI"
    );
    assert_eq!(a["client_id"], other.as_str());

    assert_eq!(list(&w, "state=expired")["total"], 0);
    assert_eq!(list(&w, &format!("client_id={other}"))["total"], 2);
    assert_eq!(list(&w, "client_id=nobody")["total"], 0);

    // Pagination.
    let p = list(&w, "limit=1");
    assert_eq!(codes(&p), [pending2.user_code.as_str()]);
    assert_eq!(p["total"], 6);
    let p = list(&w, "limit=2&offset=1");
    assert_eq!(codes(&p), codes(&all)[1..3].to_vec());
    let p = list(&w, "offset=6");
    assert_eq!(p["device_authorisations"], json!([]));
    assert_eq!(p["total"], 6);
    let p = list(&w, "state=pending&offset=5");
    assert_eq!((items(&p).len(), p["total"].clone()), (0, json!(2)));

    let bad = |q: &str| {
        w.get(
            &format!("/api/v1/admin/oauth/device-authorizations?{q}"),
            &w.root.access,
        )
    };
    assert_bad_field(&bad("state=waiting"), "state");
    assert_bad_field(&bad("state=pending&state=denied"), "state");
    assert_bad_field(&bad("limit=0"), "limit");
    assert_bad_field(&bad("limit=1001"), "limit");
    assert_bad_field(&bad("offset=-3"), "offset");
}

#[test]
fn deny_a_pending_authorization() {
    let w = World::new();
    let (_, alice) = w.user("alice");
    let s = w.start_device(&w.cli, "devices", "to-deny");
    assert_eq!(
        w.poll(&w.cli, &s.device_code).body["error"],
        "authorization_pending"
    );
    let page = list(&w, &format!("state=pending&client_id={}", w.cli));
    let id = items(&page)[0]["id"].as_str().unwrap().to_string();
    let path = format!("/api/v1/admin/oauth/device-authorizations/{id}/deny");

    // Only admins.
    assert_error(&w.post(&path, &alice.access, None), 403, "forbidden");

    let r = w.post(&path, &w.root.access, None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), FIELDS);
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["user_code"], s.user_code.as_str());
    assert!(r.body["denied_at"].is_string());
    assert_eq!(r.body["approved_at"], Value::Null);
    assert_eq!(r.body["consumed_at"], Value::Null);
    assert_eq!(r.body["approved_by_account_id"], w.root_id.as_str());

    let poll = w.poll(&w.cli, &s.device_code);
    assert_eq!(poll.status, 400);
    assert_eq!(poll.body["error"], "access_denied", "{}", poll.text);
    assert_eq!(codes(&list(&w, "state=denied")), [s.user_code.as_str()]);
    let r = w.get(&format!("/api/v1/devices/{}", s.user_code), &alice.access);
    assert_error(&r, 404, "not_found");
    let r = w.put(
        "/api/v1/devices/verify",
        &alice.access,
        json!({ "user_code": s.user_code }),
    );
    assert_error(&r, 422, "unprocessable");

    // Denying again, or denying an approved or consumed one, is a conflict.
    assert_error(&w.post(&path, &w.root.access, None), 409, "conflict");
    let approved = w.start_device(&w.cli, "devices", "approved");
    w.approve(&approved.user_code, "alice", false);
    let consumed_id = items(&list(&w, "state=consumed"))[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let approved_id = items(&list(&w, "state=approved"))[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    for other in [consumed_id, approved_id] {
        let r = w.post(
            &format!("/api/v1/admin/oauth/device-authorizations/{other}/deny"),
            &w.root.access,
            None,
        );
        assert_error(&r, 409, "conflict");
    }
    // The approved device still gets its tokens.
    w.exchange(&w.cli, &approved.device_code);

    for unknown in ["00000000-0000-4000-8000-000000000000", "not-an-id"] {
        let r = w.post(
            &format!("/api/v1/admin/oauth/device-authorizations/{unknown}/deny"),
            &w.root.access,
            None,
        );
        assert_error(&r, 404, "not_found");
    }
}

#[test]
fn expired_authorizations() {
    let w = World::with_env(&[
        ("HALLPASS_OAUTH_DEVICE_CODE_LIFETIME", "3s"),
        ("HALLPASS_OAUTH_POLL_INTERVAL", "1s"),
    ]);
    let (_, alice) = w.user("alice");
    let s = w.start_device(&w.cli, "devices", "too-late");
    let id = items(&list(&w, "state=pending"))[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    std::thread::sleep(std::time::Duration::from_millis(3500));

    assert_eq!(list(&w, "state=pending")["total"], 0);
    assert_eq!(codes(&list(&w, "state=expired")), [s.user_code.as_str()]);
    let r = w.post(
        &format!("/api/v1/admin/oauth/device-authorizations/{id}/deny"),
        &w.root.access,
        None,
    );
    assert_error(&r, 409, "conflict");
    let r = w.put(
        "/api/v1/devices/verify",
        &alice.access,
        json!({ "user_code": s.user_code }),
    );
    let meta = assert_error(&r, 422, "unprocessable");
    assert_eq!(meta["field"], "user_code");
    let r = w.get(&format!("/api/v1/devices/{}", s.user_code), &alice.access);
    assert_error(&r, 404, "not_found");
    assert_eq!(
        w.poll(&w.cli, &s.device_code).body["error"],
        "expired_token"
    );
}
