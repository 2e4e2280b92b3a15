//! Every page, including error pages and redirects, carries the security headers, and no page
//! contains anything its Content-Security-Policy would block.

use crate::*;

#[test]
fn every_page_carries_the_security_headers() {
    let site = Site::new(&[("HALLPASS_LIMITS_CODE_ENTRY_FAILURES_PER_MINUTE", "100")]);
    let dev = site.device("alice", "laptop");
    let alice = sign_in(&site, "alice");
    let root = sign_in(&site, "root");
    let code = site.pending("tv");
    let code2 = site.pending("radio");

    let (login, _, _) = login_form(&site, "/devices", None);
    let mut pages: Vec<(&str, Page)> = vec![("sign-in form", login)];
    let mut add = |what: &'static str, p: Page, status: u16| {
        assert_eq!(p.status, status, "{what}: {}", p.text);
        pages.push((what, p));
    };
    add("entry form", alice.get(&site, "/device"), 200);
    add(
        "confirmation",
        alice.get(&site, &confirm_path(&code.user_code)),
        200,
    );
    add(
        "unknown code",
        alice.get(&site, &confirm_path(&other_code(&code.user_code, 0))),
        404,
    );
    add("my devices", alice.get(&site, "/devices"), 200);
    add(
        "my devices after an action",
        alice.get(&site, "/devices?done=renamed"),
        200,
    );
    add("admin page", root.get(&site, "/admin/authorizations"), 200);
    add(
        "admin page for a non-admin",
        alice.get(&site, "/admin/authorizations"),
        403,
    );
    add(
        "wrong method",
        send(&site, "GET", "/logout", Some(&alice.cookie), None, &[]),
        405,
    );
    add(
        "wrong method on /device",
        send(&site, "PUT", "/device", Some(&alice.cookie), None, &[]),
        405,
    );
    add(
        "no such action",
        alice.post(&site, &format!("/devices/{}/explode", dev.device_id), &[]),
        404,
    );
    add(
        "no such device",
        alice.post(
            &site,
            "/devices/00000000-0000-4000-8000-000000000000/lock",
            &[],
        ),
        404,
    );
    add(
        "no such page under /devices/",
        alice.get(&site, &format!("/devices/{}", dev.device_id)),
        405,
    );
    add("CSRF refusal", alice.post_raw(&site, "/logout", &[]), 403);
    add(
        "no action chosen",
        alice.post(&site, "/device", &[("user_code", &code.user_code)]),
        400,
    );
    add(
        "empty new name",
        alice.post(
            &site,
            &format!("/devices/{}/rename", dev.device_id),
            &[("name", "  ")],
        ),
        400,
    );
    add(
        "a form in JSON",
        send(
            &site,
            "POST",
            "/device",
            Some(&alice.cookie),
            None,
            &[("content-type", "application/json")],
        ),
        415,
    );
    // Post/redirect/get (issue 21): the result pages are where the 303s lead.
    add(
        "approved",
        alice.follow(
            &site,
            &alice.post(
                &site,
                "/device",
                &[("user_code", &code.user_code), ("action", "approve")],
            ),
        ),
        200,
    );
    add(
        "used code",
        alice.get(&site, &confirm_path(&code.user_code)),
        410,
    );
    add(
        "denied",
        alice.follow(
            &site,
            &alice.post(
                &site,
                "/device",
                &[("user_code", &code2.user_code), ("action", "deny")],
            ),
        ),
        200,
    );
    add(
        "denied code",
        alice.get(&site, &confirm_path(&code2.user_code)),
        410,
    );
    add(
        "QR of nonsense",
        get(&site, "/device/qr?user_code=nope"),
        400,
    );
    for (what, p) in &pages {
        eprintln!("checking {what}");
        assert_secure_page(p);
        assert!(
            p.text
                .contains("<link rel=\"stylesheet\" href=\"/static/hallpass.css\">"),
            "{what}: the page uses the one style sheet"
        );
        assert!(p.text.starts_with("<!doctype html>"), "{what}");
    }
    let allow = |i: usize| pages[i].1.header("allow").map(str::to_string);
    let wrong = pages
        .iter()
        .position(|(w, _)| *w == "wrong method")
        .unwrap();
    assert_eq!(allow(wrong).as_deref(), Some("POST"));
    assert_eq!(allow(wrong + 1).as_deref(), Some("GET, HEAD, POST"));

    // Redirects carry them too, and the signed-out pages redirect to sign in.
    for path in ["/", "/device", "/devices", "/admin/authorizations"] {
        let r = get(&site, path);
        assert_eq!(r.status, 303, "{path}");
        assert_secure_headers(&r);
    }
    // The style sheet is served from here (CSP style-src 'self').
    let css = get(&site, "/static/hallpass.css");
    assert_eq!(css.status, 200);
    assert_eq!(css.header("content-type"), Some("text/css; charset=utf-8"));
    assert_eq!(css.header("x-content-type-options"), Some("nosniff"));
    // The QR code: an image, with the same headers.
    let qr = get(&site, &format!("/device/qr?user_code={}", code.user_code));
    assert_eq!(qr.status, 200);
    assert_secure_headers(&qr);
}
