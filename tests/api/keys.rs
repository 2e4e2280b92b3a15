//! `/api/v1/admin/keys`: list, rotate (old tokens live on), revoke (its tokens die at once).

use std::time::Duration;

use serde_json::json;

use crate::harness::{assert_error, jwt_part, keys, World};

#[test]
fn rotate_list_and_revoke_signing_keys() {
    let w = World::new();
    let (_, alice) = w.user("alice");
    let first_kid = jwt_part(&w.root.access, 0)["kid"]
        .as_str()
        .unwrap()
        .to_string();

    let r = w.get("/api/v1/admin/keys", &w.root.access);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(keys(&r.body), ["items"]);
    let items = r.body["items"].as_array().unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        keys(&items[0]),
        ["activated", "algorithm", "created", "kid", "retired"]
    );
    assert_eq!(items[0]["kid"], first_kid.as_str());
    assert_eq!(items[0]["algorithm"], "EdDSA");
    assert!(items[0]["activated"].is_string());
    assert_eq!(items[0]["retired"], serde_json::Value::Null);

    let r = w.post("/api/v1/admin/keys/rotate", &w.root.access, None);
    assert_eq!(r.status, 201, "{}", r.text);
    // `rotated` (issue 19): every new key, one per algorithm in use; here only EdDSA's.
    assert_eq!(keys(&r.body), ["algorithm", "kid", "rotated"]);
    assert_eq!(r.body["algorithm"], "EdDSA");
    assert_eq!(
        r.body["rotated"],
        json!([{ "kid": r.body["kid"], "algorithm": "EdDSA" }])
    );
    let new_kid = r.body["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, first_kid);

    let items = w.get("/api/v1/admin/keys", &w.root.access).body["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 2);
    assert_eq!(items[0]["kid"], new_kid.as_str(), "newest first");
    assert_eq!(items[0]["retired"], serde_json::Value::Null);
    assert_eq!(items[1]["kid"], first_kid.as_str());
    assert!(items[1]["retired"].is_string());

    // Tokens signed by the retired key still work, twice (the second check is answered from
    // the server's memory of verified tokens, jwt::Verified).
    for _ in 0..2 {
        assert_eq!(w.get("/api/v1/devices", &alice.access).status, 200);
        assert!(w.active(&alice.access));
    }
    // New tokens are signed by the new key (the server re-reads the active key within 1 s).
    std::thread::sleep(Duration::from_millis(1200));
    let root2 = w.login(&w.cli, "root", "devices admin");
    assert_eq!(jwt_part(&root2.access, 0)["kid"], new_kid.as_str());
    let jwks = w.raw("GET", "/oauth/jwks", &[], None);
    let published: Vec<_> = jwks.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect();
    assert!(published.contains(&first_kid) && published.contains(&new_kid));

    // Revoking the old key ends its tokens at once, though the server verified them before.
    let r = w.delete(&format!("/api/v1/admin/keys/{first_kid}"), &root2.access);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body, json!({ "kid": first_kid, "deleted": true }));
    assert!(!w.active(&alice.access));
    assert_error(
        &w.get("/api/v1/devices", &alice.access),
        401,
        "unauthenticated",
    );
    assert_error(
        &w.get("/api/v1/admin/keys", &w.root.access),
        401,
        "unauthenticated",
    );
    let r = w.delete(&format!("/api/v1/admin/keys/{first_kid}"), &root2.access);
    assert_error(&r, 404, "not_found");
    let items = w.get("/api/v1/admin/keys", &root2.access).body["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 1);
    // The device itself is fine: a refresh gets a token signed by the new key.
    let r = w.refresh(&w.cli, &alice.refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    let fresh = r.body["access_token"].as_str().unwrap();
    assert_eq!(jwt_part(fresh, 0)["kid"], new_kid.as_str());
    assert_eq!(w.get("/api/v1/devices", fresh).status, 200);
}

/// With nothing configured the key is RS256 (issue 19: RFC 9068 §2.1's one required
/// algorithm); `?algorithm=` rotates one algorithm, which may be one nobody signs with yet.
#[test]
fn the_default_key_is_rs256_and_rotation_takes_an_algorithm() {
    let w = World::with_default_algorithm(&[]);
    assert_eq!(jwt_part(&w.root.access, 0)["alg"], "RS256");
    let items = w.get("/api/v1/admin/keys", &w.root.access).body["items"].clone();
    assert_eq!(items.as_array().unwrap().len(), 1);
    assert_eq!(items[0]["algorithm"], "RS256");

    let r = w.post(
        "/api/v1/admin/keys/rotate?algorithm=ES256",
        &w.root.access,
        None,
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["algorithm"], "ES256");
    let items = w.get("/api/v1/admin/keys", &w.root.access).body["items"].clone();
    let active: Vec<&str> = items
        .as_array()
        .unwrap()
        .iter()
        .filter(|k| k["retired"].is_null())
        .map(|k| k["algorithm"].as_str().unwrap())
        .collect();
    assert_eq!(active, ["ES256", "RS256"], "one active key per algorithm");

    // Without `algorithm`: every algorithm in use, the default's first.
    let r = w.post("/api/v1/admin/keys/rotate", &w.root.access, None);
    assert_eq!(r.status, 201, "{}", r.text);
    let rotated: Vec<&str> = r.body["rotated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["algorithm"].as_str().unwrap())
        .collect();
    assert_eq!(rotated, ["RS256", "ES256"]);
    assert_eq!(r.body["kid"], r.body["rotated"][0]["kid"]);
    let r = w.post(
        "/api/v1/admin/keys/rotate?algorithm=none",
        &w.root.access,
        None,
    );
    assert_error(&r, 400, "bad_request");
}
