//! What devices (and people) send is shown escaped on every page: no markup from input reaches
//! a page unescaped.

use crate::*;

const SCRIPT: &str = "<script>alert(1)</script>";
const ATTR: &str = "\"><img src=x onerror=alert(1)>";
const HOST: &str = "'><svg onload=alert(2)>.local";

/// `s` as the pages must show it.
fn escaped(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// No markup from the hostile inputs appears raw.
#[track_caller]
fn assert_inert(p: &Page) {
    assert_secure_page(p);
    let lower = p.text.to_ascii_lowercase();
    for raw in [
        "<script",
        "<img",
        "<svg",
        "onerror=alert(1)>",
        "onload=alert(2)>",
    ] {
        assert!(!lower.contains(raw), "raw {raw:?} on the page:\n{}", p.text);
    }
}

#[test]
fn device_reported_text_is_escaped_on_every_page() {
    let site = Site::new(&[]);
    let (evil_client, _) = site.add_client(SCRIPT, "devices", &[]);
    let r = site.form(
        "/oauth/device_authorization",
        &[
            ("client_id", evil_client.as_str()),
            ("scope", "devices"),
            ("device_name", SCRIPT),
            ("os", ATTR),
            ("hostname", HOST),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let code = r.body["user_code"].as_str().unwrap().to_string();
    let device_code = r.body["device_code"].as_str().unwrap().to_string();
    let root = sign_in(&site, "root");

    // The confirmation page shows all three, escaped, and the client's name too.
    let page = root.get(&site, &confirm_path(&code));
    page.expect(200);
    assert_inert(&page);
    for s in [SCRIPT, ATTR, HOST] {
        assert!(
            page.text.contains(&escaped(s)),
            "{s:?} is not shown escaped:\n{}",
            page.text
        );
    }

    // The admin page: the pending code, its client's name escaped.
    let admin = root.get(&site, "/admin/authorizations");
    admin.expect(200);
    assert_inert(&admin);
    assert!(admin.text.contains(&code));
    assert!(admin.text.contains(&escaped(SCRIPT)), "{}", admin.text);

    // Approve, exchange: /devices shows them escaped (in text and in the rename field).
    let r = root.post(
        &site,
        "/device",
        &[("user_code", &code), ("action", "approve")],
    );
    // Post/redirect/get (issue 21): what the approval shows is on the page it leads to.
    let r = root.follow(&site, &r);
    r.expect(200);
    assert_inert(&r);
    assert!(r.text.contains(&escaped(SCRIPT)), "{}", r.text);
    let dev_id = site.exchange(&evil_client, &device_code).device_id;
    let mine = root.get(&site, "/devices");
    mine.expect(200);
    assert_inert(&mine);
    for s in [SCRIPT, ATTR, HOST] {
        assert!(mine.text.contains(&escaped(s)), "{s:?}:\n{}", mine.text);
    }
    assert!(mine
        .text
        .contains(&format!("value=\"{}\"", escaped(SCRIPT))));

    // A hostile new name given on /devices.
    let new_name = "</textarea>\"><script>alert(3)</script>";
    let r = root.post(
        &site,
        &format!("/devices/{dev_id}/rename"),
        &[("name", new_name)],
    );
    assert_eq!(r.status, 303, "{}", r.text);
    let mine = root.get(&site, &format!("/devices?done={}", enc("<script>x")));
    mine.expect(200);
    assert_inert(&mine);
    assert!(mine.text.contains(&escaped(new_name)), "{}", mine.text);
}

#[test]
fn reflected_input_is_escaped() {
    let site = Site::new(&[]);
    let alice = sign_in(&site, "alice");
    // A typed code is shown back in the entry form.
    let typed = format!("{ATTR}{SCRIPT}");
    let r = alice.get(&site, &confirm_path(&typed));
    // Not a code (issue 21: 400 with what a code looks like, instead of a 404 lookup).
    r.expect(400);
    assert_inert(&r);
    assert!(
        r.text.contains(&format!("value=\"{}\"", escaped(&typed))),
        "{}",
        r.text
    );
    // The sign-in page's `next` and the username shown back after a failure.
    let next = format!("/devices?x={ATTR}{SCRIPT}");
    let (page, cookie, token) = login_form(&site, &next, None);
    assert_inert(&page);
    assert_eq!(page.hidden("next").as_deref(), Some(next.as_str()));
    let r = post_login(&site, Some(&cookie), &token, &typed, "wrong", &next, None);
    r.expect(401);
    assert_inert(&r);
    assert!(r.text.contains(&escaped(&typed)));
    // The redirect to sign in carries the path percent-encoded.
    let r = get(&site, &format!("/devices?x={}", enc(SCRIPT)));
    assert_eq!(r.status, 303);
    assert!(
        !r.location().contains('<') && !r.location().contains('"'),
        "{}",
        r.location()
    );
}
