//! Every place that reports or issues a scope applies the user's current rights (issue 18 §5):
//! a demoted admin's tokens stop saying `admin` at once, in introspection as at the API.

use serde_json::{json, Value};

use crate::harness::{tokens, World};

/// The introspection answer for `token`, with `svc`'s credentials.
fn introspection(w: &World, token: &str) -> Value {
    let r = w.form(
        "/oauth/introspect",
        &[
            ("token", token),
            ("client_id", &w.svc),
            ("client_secret", &w.svc_secret),
        ],
    );
    assert_eq!(r.status, 200, "introspect: {}", r.text);
    assert_eq!(r.body["active"], true, "{}", r.text);
    r.body
}

#[test]
fn a_demoted_admins_tokens_stop_reporting_admin() {
    let w = World::new();
    w.add_user("root2", true);
    let root2 = w.login(&w.cli, "root2", "devices admin");
    assert_eq!(introspection(&w, &w.root.access)["scope"], "admin devices");
    assert_eq!(introspection(&w, &w.root.refresh)["scope"], "admin devices");

    let user = format!("/api/v1/admin/users/{}", w.root_id);
    let r = w.patch(&user, &root2.access, json!({ "is_admin": false }));
    assert_eq!(r.status, 200, "{}", r.text);

    // The same tokens, unchanged, now report only what root may still have.
    assert_eq!(introspection(&w, &w.root.access)["scope"], "devices");
    assert_eq!(introspection(&w, &w.root.refresh)["scope"], "devices");

    // A refresh issues no `admin` either: not in the answer, the new access token, or the
    // new refresh token.
    let r = w.refresh(&w.cli, &w.root.refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    let fresh = tokens(&r.body);
    assert_eq!(fresh.scope, "devices");
    assert_eq!(
        crate::harness::jwt_part(&fresh.access, 1)["scope"],
        "devices"
    );
    assert_eq!(introspection(&w, &fresh.access)["scope"], "devices");
    assert_eq!(introspection(&w, &fresh.refresh)["scope"], "devices");

    // Promoted again: the untouched access token carries `admin` in its claims and reports it
    // again, since the user now has it; the rotated grant dropped it for good.
    let r = w.patch(&user, &root2.access, json!({ "is_admin": true }));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(introspection(&w, &w.root.access)["scope"], "admin devices");
    assert_eq!(introspection(&w, &fresh.refresh)["scope"], "devices");
}
