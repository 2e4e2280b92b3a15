//! Every state-changing form is refused without the session's CSRF token (or with another
//! session's), and changes nothing; the sign-in form needs its double-submit cookie; the API
//! wants `X-CSRF-Token` from a browser session.

use serde_json::json;

use crate::*;

/// The refused variants of a form: no token, an empty one, a made-up one, another session's
/// (another user's, and another session of the same user).
fn bad_tokens<'a>(others: &[&'a str]) -> Vec<Option<&'a str>> {
    let mut v = vec![
        None,
        Some(""),
        Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"),
    ];
    v.extend(others.iter().map(|t| Some(*t)));
    v
}

/// POSTs `fields` plus each bad token to `path` as `s`; every one must be a 403 page.
#[track_caller]
fn refused_everywhere(
    site: &Site,
    s: &Session,
    path: &str,
    fields: &[(&str, &str)],
    others: &[&str],
) {
    for token in bad_tokens(others) {
        let mut all: Vec<(&str, &str)> = Vec::new();
        if let Some(t) = token {
            all.push(("csrf", t));
        }
        all.extend_from_slice(fields);
        let r = s.post_raw(site, path, &all);
        assert_eq!(
            r.status, 403,
            "POST {path} with token {token:?} was not refused:\n{}",
            r.text
        );
        assert_secure_page(&r);
        assert!(
            r.text.contains("nothing was changed"),
            "the refusal says nothing was changed: {}",
            r.text
        );
        assert!(
            r.set_cookie(&s.name).is_none(),
            "the session cookie changed"
        );
    }
}

#[test]
fn forms_without_the_sessions_csrf_token_are_refused_and_change_nothing() {
    let site = Site::new(&[("HALLPASS_OAUTH_POLL_INTERVAL", "1s")]);
    let dev = site.device("alice", "laptop");
    let alice = sign_in(&site, "alice");
    let alice2 = sign_in(&site, "alice");
    let root = sign_in(&site, "root");
    assert_ne!(alice.csrf, alice2.csrf, "each session has its own token");
    assert_ne!(alice.csrf, root.csrf);
    let others = [alice2.csrf.as_str(), root.csrf.as_str()];

    // Approve and deny on /device: the code stays pending.
    let code = site.pending("tv");
    for action in ["approve", "deny"] {
        refused_everywhere(
            &site,
            &alice,
            "/device",
            &[
                ("user_code", &code.user_code),
                ("action", action),
                ("trusted", "on"),
            ],
            &others,
        );
    }
    assert_eq!(
        poll_outcome(&site, &site.cli, &code),
        "authorization_pending"
    );
    alice.get(&site, &confirm_path(&code.user_code)).expect(200);

    // Rename, lock, remove on /devices: the device is as it was and still refreshes.
    let id = dev.device_id.clone();
    for (action, fields) in [
        ("rename", vec![("name", "renamed by another site")]),
        ("lock", vec![]),
        ("remove", vec![]),
    ] {
        refused_everywhere(
            &site,
            &alice,
            &format!("/devices/{id}/{action}"),
            &fields,
            &others,
        );
    }
    let d = cli_device(&site, "alice", &id).expect("the device is still there");
    assert_eq!(d["name"], "laptop");
    assert_ne!(d["status"], "locked");
    // Unlock: lock it first (command line), the refused unlock leaves it locked.
    site.cli_ok(&["device", "lock", &id], None);
    refused_everywhere(
        &site,
        &alice,
        &format!("/devices/{id}/unlock"),
        &[],
        &others,
    );
    assert_eq!(cli_device(&site, "alice", &id).unwrap()["status"], "locked");
    assert_eq!(site.refresh(&site.cli, &dev.refresh).status, 400);
    site.cli_ok(&["device", "unlock", &id], None);
    let r = site.refresh(&site.cli, &dev.refresh);
    assert_eq!(r.status, 200, "{}", r.text);

    // Admin deny: the code stays pending.
    let waiting = site.pending("printer");
    let admin_page = root.get(&site, "/admin/authorizations");
    admin_page.expect(200);
    let auth_id = deny_action_for(&admin_page.text, &waiting.user_code);
    let deny_path = format!("/admin/authorizations/{auth_id}/deny");
    refused_everywhere(
        &site,
        &root,
        &deny_path,
        &[],
        &[alice.csrf.as_str(), alice2.csrf.as_str()],
    );
    assert_eq!(
        poll_outcome(&site, &site.cli, &waiting),
        "authorization_pending"
    );

    // Sign-out: the session still works.
    refused_everywhere(&site, &alice, "/logout", &[], &others);
    alice.get(&site, "/devices").expect(200);

    // The same requests with the right token do what they say, so the refusals above were not
    // refusals of malformed requests.
    let r = alice.post(
        &site,
        &format!("/devices/{id}/rename"),
        &[("name", "renamed")],
    );
    assert_eq!((r.status, r.location()), (303, "/devices?done=renamed"));
    assert_eq!(cli_device(&site, "alice", &id).unwrap()["name"], "renamed");
    let r = root.post(&site, &deny_path, &[]);
    assert_eq!(r.status, 303, "{}", r.text);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(poll_outcome(&site, &site.cli, &waiting), "access_denied");
    let r = alice.post(
        &site,
        "/device",
        &[("user_code", &code.user_code), ("action", "deny")],
    );
    // Post/redirect/get (issue 21): the 200 is the page the 303 leads to.
    alice.follow(&site, &r).expect(200);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    assert_eq!(poll_outcome(&site, &site.cli, &code), "access_denied");
    let r = alice.post(&site, "/logout", &[]);
    assert_eq!((r.status, r.location()), (303, "/login"));
    assert_eq!(alice.get(&site, "/devices").status, 303);
    // The other session of the same user is untouched by that sign-out.
    alice2.get(&site, "/devices").expect(200);
}

/// The id in the Deny form of the admin page's row for `user_code`.
pub fn deny_action_for(html: &str, user_code: &str) -> String {
    let row = html
        .find(&format!(">{user_code}</code>"))
        .unwrap_or_else(|| panic!("{user_code} not on the admin page:\n{html}"));
    let rest = &html[row..];
    let end = rest.find("</tr>").unwrap();
    let rest = &rest[..end];
    let marker = "action=\"/admin/authorizations/";
    let start = rest
        .find(marker)
        .unwrap_or_else(|| panic!("no Deny form for {user_code}: {rest}"))
        + marker.len();
    let len = rest[start..].find("/deny\"").unwrap();
    rest[start..start + len].to_string()
}

#[test]
fn a_form_posted_without_a_session_changes_nothing() {
    let site = Site::new(&[]);
    let dev = site.device("alice", "laptop");
    let code = site.pending("tv");
    let id = dev.device_id.clone();
    for (path, fields) in [
        (
            "/device".to_string(),
            vec![
                ("user_code", code.user_code.as_str()),
                ("action", "approve"),
            ],
        ),
        (format!("/devices/{id}/remove"), vec![]),
        (format!("/devices/{id}/lock"), vec![]),
    ] {
        let r = send(&site, "POST", &path, None, Some(&fields), &[]);
        assert_eq!(r.status, 303, "POST {path} signed out: {}", r.text);
        assert!(r.location().starts_with("/login"), "{}", r.location());
    }
    assert_eq!(
        poll_outcome(&site, &site.cli, &code),
        "authorization_pending"
    );
    assert_eq!(cli_device(&site, "alice", &id).unwrap()["status"], "active");
}

#[test]
fn the_sign_in_form_needs_its_double_submit_cookie() {
    let site = Site::new(&[]);
    let (_, cookie, token) = login_form(&site, "/devices", None);
    let (_, other_cookie, other_token) = login_form(&site, "/devices", None);
    assert_ne!(token, other_token);
    let value = cookie.split_once('=').unwrap().1;
    assert_eq!(value, token, "the cookie carries the form's token");
    let cases: [(Option<&str>, &str); 5] = [
        (None, &token),
        (Some(&other_cookie), &token),
        (Some(&cookie), &other_token),
        (Some(&cookie), ""),
        (Some("hallpass_login="), ""),
    ];
    for (c, t) in cases {
        let r = post_login(&site, c, t, "alice", PASSWORD, "/devices", None);
        assert_eq!(
            r.status, 403,
            "sign-in with cookie {c:?} and token {t:?}: {}",
            r.text
        );
        assert_secure_page(&r);
        assert!(
            r.set_cookie("hallpass_session").is_none(),
            "a refused sign-in started a session"
        );
        assert!(r.text.contains("Please sign in again"), "{}", r.text);
        // The page offers a fresh form to try again.
        assert!(r.set_cookie("hallpass_login").is_some());
        assert!(r.hidden("csrf").is_some());
    }
    // The matching pair signs in.
    let r = post_login(
        &site,
        Some(&cookie),
        &token,
        "alice",
        PASSWORD,
        "/devices",
        None,
    );
    assert_eq!(r.status, 303, "{}", r.text);
    assert!(r.set_cookie("hallpass_session").is_some());
}

#[test]
fn the_api_wants_the_csrf_header_from_a_browser_session() {
    let site = Site::new(&[]);
    let dev = site.device("alice", "laptop");
    let alice = sign_in(&site, "alice");
    let root = sign_in(&site, "root");
    let id = dev.device_id.clone();
    let path = format!("/api/v1/devices/{id}");

    // GET needs no token and hands it out.
    let r = alice.api(&site, "GET", "/api/v1/devices", None, None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.header("x-csrf-token"), Some(alice.csrf.as_str()));
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);

    for (method, body) in [
        ("PUT", Some(json!({"name": "changed"}))),
        ("PUT", Some(json!({"locked": true}))),
        ("DELETE", None),
    ] {
        for token in [None, Some(""), Some(root.csrf.as_str())] {
            let r = alice.api(&site, method, &path, token, body.clone());
            harness::assert_error(&r, 403, "forbidden");
        }
    }
    let d = alice.api(&site, "GET", &path, None, None);
    assert_eq!(d.status, 200);
    assert_eq!(d.body["name"], "laptop");
    assert_eq!(d.body["status"], "active");

    // With the header: the changes happen.
    let r = alice.api(
        &site,
        "PUT",
        &path,
        Some(&alice.csrf),
        Some(json!({"name": "changed"})),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["name"], "changed");
    let r = alice.api(&site, "DELETE", &path, Some(&alice.csrf), None);
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(alice.api(&site, "GET", &path, None, None).status, 404);
    assert!(cli_device(&site, "alice", &id).is_none());
}
