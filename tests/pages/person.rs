//! What a person meets (issue 21), over HTTP: every successful form answers 303 to a page that
//! says what happened (post/redirect/get), error pages share the layout (HTML for a browser,
//! JSON for a program), the icon, the confirmation page comparing the device's network and
//! country with the approver's, the destructive actions' second step, the wording, and the
//! admins' page with device facts, filters and paging.

use std::time::Duration;

use crate::*;

const HTML: &str = "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8";

/// Asserts a page in the site's layout: the security headers, the style sheet, the icon, and
/// the navigation of a signed-in person (`signed_in`) or the way to sign in.
#[track_caller]
fn assert_layout(p: &Page, signed_in: bool) {
    assert_secure_page(p);
    assert!(p.text.starts_with("<!doctype html>"), "{}", p.text);
    assert!(p
        .text
        .contains("<link rel=\"stylesheet\" href=\"/static/hallpass.css\">"));
    assert!(p.text.contains("<link rel=\"icon\" href=\"/favicon.ico\">"));
    assert!(p.text.contains("<nav aria-label=\"Main\">"), "{}", p.text);
    if signed_in {
        assert!(p.text.contains("<a href=\"/devices\">My devices</a>"));
        assert!(p.text.contains("action=\"/logout\""));
    } else {
        assert!(
            p.text.contains("<a href=\"/login\">Sign in</a>"),
            "{}",
            p.text
        );
    }
}

#[test]
fn every_successful_form_answers_303_to_a_page_that_says_what_happened() {
    let site = Site::new(&[("HALLPASS_OAUTH_POLL_INTERVAL", "1s")]);
    let alice = sign_in(&site, "alice");
    let root = sign_in(&site, "root");

    // Approve: 303 to the result, which can be reloaded without approving anything again.
    let code = site.pending("tv");
    let r = alice.post(
        &site,
        "/device",
        &[("user_code", &code.user_code), ("action", "approve")],
    );
    assert_eq!(r.status, 303, "{}", r.text);
    assert!(
        r.location().starts_with("/device/approved?device="),
        "{}",
        r.location()
    );
    assert!(r.text.is_empty());
    for _ in 0..2 {
        let p = alice.follow(&site, &r);
        p.expect(200);
        assert_layout(&p, true);
        assert!(p.text.contains("<h1>Device approved</h1>"), "{}", p.text);
        assert!(p
            .text
            .contains("<strong>tv</strong> can now sign in as <strong>alice</strong>"));
        assert!(p.text.contains("1 day"));
    }
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(poll_outcome(&site, &site.cli, &code), "ok");
    // Back to the confirmation: it says the approver did it, not that someone used the code.
    let back = alice.get(&site, &confirm_path(&code.user_code));
    back.expect(410);
    let notice = back.notice().unwrap();
    assert!(
        notice.starts_with("This code has already been used. You approved it yourself"),
        "{notice}"
    );
    assert!(notice.contains("nothing more to do"), "{notice}");
    // Another person's device is not shown on the approval result.
    let bob = sign_in(&site, "bob");
    bob.get(&site, r.location()).expect(404);

    // Deny: 303 to a page that tells someone who did not start the request what to do.
    let code = site.pending("radio");
    let r = alice.post(
        &site,
        "/device",
        &[("user_code", &code.user_code), ("action", "deny")],
    );
    assert_eq!((r.status, r.location()), (303, "/device/denied"));
    let p = alice.follow(&site, &r);
    p.expect(200);
    assert_layout(&p, true);
    assert!(p.text.contains("<h1>Device denied</h1>"));
    assert!(p.text.contains("Did someone else give you this code?"));
    assert!(p.text.contains("You do not need to do anything else"));
    assert!(p.text.contains("the code no longer works"));
    assert!(p.text.contains("check <a href=\"/devices\">My devices</a>"));

    // The device actions and the admin's Deny: 303 to the list with what happened.
    let dev = site.device("alice", "laptop");
    let id = &dev.device_id;
    for (action, done, words) in [
        ("rename", "renamed", "The device was renamed."),
        ("lock", "locked", "The device is locked."),
        ("unlock", "unlocked", "The device is unlocked"),
        (
            "remove",
            "removed",
            "The device was removed and signed out.",
        ),
    ] {
        let r = alice.post(
            &site,
            &format!("/devices/{id}/{action}"),
            &[("name", "laptop 2")],
        );
        assert_eq!(r.status, 303, "{action}: {}", r.text);
        assert_eq!(r.location(), format!("/devices?done={done}"));
        let p = alice.follow(&site, &r);
        p.expect(200);
        assert!(p.notice().unwrap().contains(words), "{action}: {}", p.text);
    }
    let waiting = site.pending("printer");
    let page = root.get(&site, "/admin/authorizations");
    let auth = crate::csrf::deny_action_for(&page.text, &waiting.user_code);
    let r = root.post(&site, &format!("/admin/authorizations/{auth}/deny"), &[]);
    let p = root.follow(&site, &r);
    assert!(p
        .notice()
        .unwrap()
        .contains("The authorization was denied."));

    // Sign-out: 303 to the sign-in page, which says so once; a reload shows the plain form.
    let r = alice.post(&site, "/logout", &[]);
    assert_eq!((r.status, r.location()), (303, "/login"));
    let once = r
        .set_cookie("hallpass_notice")
        .expect("the signed-out notice cookie");
    assert!(once.starts_with("hallpass_notice=signed_out;"), "{once}");
    assert!(once.to_ascii_lowercase().contains("httponly"));
    let cookie = once.split(';').next().unwrap();
    let p = send(&site, "GET", "/login", Some(cookie), None, &[]);
    p.expect(200);
    assert_secure_page(&p);
    assert!(p.notice().unwrap().contains("You are signed out."));
    let cleared = p.set_cookie("hallpass_notice").expect("cleared");
    assert!(cleared.starts_with("hallpass_notice=;"), "{cleared}");
    let p = get(&site, "/login");
    assert!(!p.text.contains("You are signed out."));

    // Sign-in: 303 to where the person was going (it always was).
    let (_, c, t) = login_form(&site, "/devices", None);
    let r = post_login(&site, Some(&c), &t, "alice", PASSWORD, "/devices", None);
    assert_eq!((r.status, r.location()), (303, "/devices"));
}

#[test]
fn error_pages_share_the_layout_and_programs_get_json() {
    let site = Site::new(&[]);
    let alice = sign_in(&site, "alice");

    // An unknown path: a page for a browser (signed in or not), JSON for a program.
    let p = send(
        &site,
        "GET",
        "/no/such/page",
        None,
        None,
        &[("accept", HTML)],
    );
    p.expect(404);
    assert_layout(&p, false);
    assert!(p.text.contains("<h1>Not found</h1>"));
    assert!(p.text.contains("class=\"button primary\" href=\"/device\""));
    let p = send(
        &site,
        "GET",
        "/no/such/page",
        Some(&alice.cookie),
        None,
        &[("accept", HTML)],
    );
    p.expect(404);
    assert_layout(&p, true);
    for accept in [None, Some("application/json"), Some("*/*")] {
        let mut headers = vec![];
        if let Some(a) = accept {
            headers.push(("accept", a));
        }
        let r = site.raw("GET", "/no/such/page", &headers, None);
        harness::assert_error(&r, 404, "not_found");
    }
    // A known path with the wrong method: the same, with Allow.
    let p = send(&site, "POST", "/healthz", None, None, &[("accept", HTML)]);
    p.expect(405);
    assert_layout(&p, false);
    assert_eq!(p.header("allow"), Some("GET, HEAD"));
    let r = site.raw("POST", "/healthz", &[], None);
    harness::assert_error(&r, 405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
    // The API and OAuth endpoints keep their own shapes, even for a browser.
    let r = site.raw("GET", "/api/v1/nope", &[("accept", HTML)], None);
    harness::assert_error(&r, 404, "not_found");
    let r = site.raw("GET", "/oauth/nope", &[("accept", HTML)], None);
    assert_eq!(r.status, 404);
    assert_eq!(r.body["error"], "not_found", "{}", r.text);
    assert!(r.body["error_description"].is_string());

    // 403 and a page's own 404: the layout with the person's navigation.
    let p = alice.get(&site, "/admin/authorizations");
    p.expect(403);
    assert_layout(&p, true);
    let p = alice.post(
        &site,
        "/devices/00000000-0000-4000-8000-000000000000/lock",
        &[],
    );
    p.expect(404);
    assert_layout(&p, true);

    // 410: My devices is a link.
    let code = site.pending("tv");
    site.approve(&code.user_code, "bob", false);
    let p = alice.get(&site, &confirm_path(&code.user_code));
    p.expect(410);
    assert_layout(&p, true);
    assert!(
        p.notice()
            .unwrap()
            .contains("check <a href=\"/devices\">My devices</a>"),
        "{}",
        p.text
    );

    // 429: the layout too, and how long to wait.
    let mut limited = None;
    for n in 0..10 {
        let p = alice.get(&site, &confirm_path(&other_code(&code.user_code, n)));
        if p.status == 429 {
            limited = Some(p);
            break;
        }
    }
    let p = limited.expect("limited after a few wrong codes");
    assert_layout(&p, true);
    assert!(p.text.contains("<h1>Too many attempts</h1>"));
    let secs = p.header("retry-after").unwrap();
    assert!(p.text.contains(&format!("Wait {secs} seconds")));

    // The icon: served, an ICO, cacheable.
    let icon = get(&site, "/favicon.ico");
    assert_eq!(icon.status, 200);
    assert_eq!(icon.header("content-type"), Some("image/x-icon"));
    assert_secure_headers_except_cache(&icon);
    let bytes = reqwest::blocking::get(site.url("/favicon.ico"))
        .unwrap()
        .bytes()
        .unwrap();
    assert_eq!(&bytes[..4], &[0, 0, 1, 0], "an ICO header");
    assert!(bytes.len() > 1000);
}

/// The security headers of a cacheable file (the style sheet, the icon).
#[track_caller]
fn assert_secure_headers_except_cache(p: &Page) {
    assert!(p.header("content-security-policy").is_some());
    assert_eq!(p.header("x-content-type-options"), Some("nosniff"));
    assert_eq!(p.header("cache-control"), Some("public, max-age=3600"));
}

/// Starts a device authorization from `ip` in `country` (behind the trusted proxy).
fn device_from(site: &Site, name: &str, ip: &str, country: &str) -> harness::Started {
    let r = site.raw(
        "POST",
        "/oauth/device_authorization",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-forwarded-for", ip),
            ("x-geo-country", country),
        ],
        Some(
            format!(
                "client_id={}&scope=devices&device_name={name}&os=linux",
                site.cli
            )
            .into_bytes(),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    harness::Started {
        device_code: r.body["device_code"].as_str().unwrap().into(),
        user_code: r.body["user_code"].as_str().unwrap().into(),
    }
}

/// The confirmation page for `code` as `s` sees it from `ip` in `country`.
fn confirm_from(site: &Site, s: &Session, code: &str, ip: &str, country: Option<&str>) -> Page {
    let mut headers = vec![("x-forwarded-for", ip)];
    if let Some(c) = country {
        headers.push(("x-geo-country", c));
    }
    let p = send(
        site,
        "GET",
        &confirm_path(code),
        Some(&s.cookie),
        None,
        &headers,
    );
    p.expect(200);
    assert!(p.text.contains("Approve this device?"));
    p
}

#[test]
fn the_confirmation_page_compares_the_devices_network_and_country_with_the_approvers() {
    let site = Site::new(&[
        ("HALLPASS_SERVER_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("HALLPASS_LOCATION_COUNTRY_HEADER", "X-Geo-Country"),
    ]);
    let alice = sign_in_via(&site, "alice", Some("198.51.100.2"));
    let code = device_from(&site, "tv", "203.0.113.7", "Iceland");

    // Another network, another country: both said plainly, with what to do.
    let p = confirm_from(
        &site,
        &alice,
        &code.user_code,
        "198.51.100.2",
        Some("Netherlands"),
    );
    let text = &p.text;
    assert!(
        text.contains(
            "This device asked from another country: Iceland. You appear to be in Netherlands."
        ),
        "{text}"
    );
    assert!(text.contains(
        "This device asked from a different network than the one you are using.</strong> It asked from 203.0.113.7; you are at 198.51.100.2."
    ));
    assert!(text.contains("deny it"));
    assert!(text.contains("<div class=\"notice warn\""));
    // The same country, another network: the network alone.
    let p = confirm_from(
        &site,
        &alice,
        &code.user_code,
        "198.51.100.2",
        Some("Iceland"),
    );
    assert!(!p.text.contains("another country"));
    assert!(p.text.contains("from a different network"));
    // The same /24, no country known for the approver: no warning.
    let p = confirm_from(&site, &alice, &code.user_code, "203.0.113.99", None);
    assert!(!p.text.contains("different network"), "{}", p.text);
    assert!(p
        .text
        .contains("This device asked from the same network as you (203.0.113.7)."));
    // The same address.
    let p = confirm_from(
        &site,
        &alice,
        &code.user_code,
        "203.0.113.7",
        Some("Iceland"),
    );
    assert!(p
        .text
        .contains("This device asked from the same address as you (203.0.113.7)."));
    // IPv6: the same /64 is the same network.
    let v6 = device_from(&site, "laptop", "2001:db8:1:2::10", "Iceland");
    let p = confirm_from(&site, &alice, &v6.user_code, "2001:db8:1:2::99", None);
    assert!(p.text.contains("the same network as you"), "{}", p.text);
    let p = confirm_from(&site, &alice, &v6.user_code, "2001:db8:9:9::99", None);
    assert!(p.text.contains("from a different network"), "{}", p.text);

    // When it asked: relative, next to the absolute time.
    let asked = p.text.find("<dt>Asked</dt><dd>").expect("an Asked fact");
    let dd = &p.text[asked + "<dt>Asked</dt><dd>".len()..];
    let dd = text_of(&dd[..dd.find("</dd>").unwrap()]);
    assert!(
        dd.starts_with("just now (") && dd.ends_with(" UTC)"),
        "relative, then absolute: {dd}"
    );
}

#[test]
fn destructive_actions_ask_first_without_javascript() {
    let site = Site::new(&[]);
    let dev = site.device("alice", "laptop");
    let code = site.pending("tv");
    let alice = sign_in(&site, "alice");
    let root = sign_in(&site, "root");
    // Remove: the form with its button sits inside a closed <details> that says what happens.
    let page = alice.get(&site, "/devices");
    let remove = format!("action=\"/devices/{}/remove\"", dev.device_id);
    let form_at = page.text.find(&remove).expect("a remove form");
    let details_at = page.text[..form_at]
        .rfind("<details class=\"confirm\">")
        .expect("the remove form is inside a <details>");
    let between = &page.text[details_at..form_at];
    assert!(!between.contains("</details>"), "{between}");
    assert!(between.contains("<summary class=\"button danger\">Remove and sign out…</summary>"));
    assert!(
        between.contains("Remove <strong>laptop</strong>?"),
        "{between}"
    );
    // The admin's Deny, the same way.
    let page = root.get(&site, "/admin/authorizations");
    let auth = crate::csrf::deny_action_for(&page.text, &code.user_code);
    let deny = format!("action=\"/admin/authorizations/{auth}/deny\"");
    let form_at = page.text.find(&deny).unwrap();
    let details_at = page.text[..form_at]
        .rfind("<details class=\"confirm\">")
        .expect("the deny form is inside a <details>");
    let between = &page.text[details_at..form_at];
    assert!(!between.contains("</details>"));
    assert!(between.contains("<summary class=\"button danger\">Deny…</summary>"));
    assert!(between.contains(&code.user_code), "{between}");
    assert_no_inline_code(&page.text);
}

#[test]
fn the_words_a_person_reads() {
    let site = Site::new(&[]);
    let (reader, _) = site.add_client("Reader", "read", &[]);
    // A new trusted device expires "in 30 days", not 29; its status is a plain word.
    let trusted = site
        .server
        .login_named(&site.cli, "alice", "devices", "laptop", true);
    let approved = site.pending("tv");
    site.approve(&approved.user_code, "alice", false);
    let alice = sign_in(&site, "alice");
    let page = alice.get(&site, "/devices");
    let card = |id: &str| {
        let start = page.text.find(&format!("id=\"d-{id}\"")).unwrap();
        let end = page.text[start..].find("</section>").unwrap();
        page.text[start..start + end].to_string()
    };
    let laptop = card(&trusted.device_id);
    // The fact's text, tags left out: "Expires" then "in 30 days (date)".
    assert!(text_of(&laptop).contains("Expiresin 30 days ("), "{laptop}");
    assert!(laptop.contains("<span class=\"status active\">active</span>"));
    assert!(
        page.text
            .contains("<span class=\"status verified\">approved, not signed in yet</span>"),
        "{}",
        page.text
    );
    assert!(!page.text.contains(">verified<"));

    // Locking says what stops at once and what within the access-token lifetime.
    let r = alice.post(&site, &format!("/devices/{}/lock", trusted.device_id), &[]);
    let p = alice.follow(&site, &r);
    let notice = p.notice().unwrap();
    assert!(
        notice.contains("At once, it cannot refresh its tokens"),
        "{notice}"
    );
    assert!(notice.contains("expires within 15 minutes"), "{notice}");

    // The sign-in page says why; after a wrong password the password has the focus.
    let (p, c, t) = login_form(&site, "/device?user_code=kbvkhqfs", None);
    assert!(
        p.text.contains("Sign in to approve device KBVK-HQFS."),
        "{}",
        p.text
    );
    assert!(p.text.contains("autocomplete=\"username\" autocapitalize=\"none\" spellcheck=\"false\" required autofocus>"));
    let (p, _, _) = login_form(&site, "/devices", None);
    assert!(p.text.contains("Sign in to see your devices."));
    let r = post_login(
        &site,
        Some(&c),
        &t,
        "alice",
        "wrong password",
        "/device?user_code=kbvkhqfs",
        None,
    );
    r.expect(401);
    assert!(
        r.text
            .contains("autocomplete=\"current-password\" required autofocus>"),
        "{}",
        r.text
    );
    assert!(!r.text.contains("spellcheck=\"false\" required autofocus>"));
    assert!(r.text.contains("value=\"alice\""));

    // A scope without a description reads as a sentence naming the application.
    let r = site.form(
        "/oauth/device_authorization",
        &[("client_id", reader.as_str()), ("scope", "read")],
    );
    let code = r.body["user_code"].as_str().unwrap();
    let p = alice.get(&site, &confirm_path(code));
    assert!(
        p.text
            .contains("<li><code>read</code>: Access that Reader calls “read”; it has no description here.</li>"),
        "{}",
        p.text
    );
}

#[test]
fn the_admin_page_shows_device_facts_filters_and_pages() {
    let site = Site::new(&[
        ("HALLPASS_LIMITS_DEVICE_AUTHORIZATION_PER_MINUTE", "0"),
        ("HALLPASS_SERVER_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("HALLPASS_LOCATION_COUNTRY_HEADER", "X-Geo-Country"),
    ]);
    let (other, _) = site.add_client("Other app", "devices", &[]);
    let root = sign_in(&site, "root");
    // 120 codes of `cli`, 3 of the other application, one of them approved by alice.
    for n in 0..120 {
        site.pending(&format!("dev-{n:03}"));
    }
    let mut theirs = Vec::new();
    for n in 0..3 {
        theirs.push(site.start_device(&other, "devices", &format!("other-{n}")));
    }
    site.approve(&theirs[0].user_code, "alice", false);
    let located = device_from(&site, "kitchen-tv", "203.0.113.7", "Iceland");

    // The default: live codes, newest first, 50 a page, each row with its device's facts.
    let p = root.get(&site, "/admin/authorizations");
    p.expect(200);
    assert_layout(&p, true);
    assert!(p.text.contains("<main id=\"main\" class=\"wide\">"));
    for tab in [
        "Live (124)",
        "Pending (123)",
        "Approved, not yet exchanged (1)",
        "Denied (0)",
        "All (124)",
    ] {
        assert!(p.text.contains(tab), "{tab}: {}", p.text);
    }
    assert!(p.text.contains("Showing 1–50 of 124, newest first."));
    assert_eq!(p.text.matches("<tr><td data-label=\"Code\">").count(), 50);
    let row = row_of(&p.text, &located.user_code);
    for fact in [
        "kitchen-tv",
        "linux",
        "203.0.113.7",
        "Iceland",
        "<span class=\"status pending\">waiting</span>",
        "nobody yet",
        "cli",
    ] {
        assert!(row.contains(fact), "{fact} in {row}");
    }
    assert!(p
        .text
        .contains("rel=\"next\" href=\"/admin/authorizations?page=2\""));
    assert!(!p.text.contains("rel=\"prev\""));

    // Paging: the third page holds the rest; a page past the end shows the last.
    let p = root.get(&site, "/admin/authorizations?page=3");
    assert!(p.text.contains("Showing 101–124 of 124"), "{}", p.text);
    assert_eq!(p.text.matches("<tr><td data-label=\"Code\">").count(), 24);
    assert!(p.text.contains("dev-000"), "the oldest is last");
    assert!(p
        .text
        .contains("rel=\"prev\" href=\"/admin/authorizations?page=2\""));
    assert!(!p.text.contains("rel=\"next\""));
    let p = root.get(&site, "/admin/authorizations?page=999");
    assert!(p.text.contains("Page 3 of 3"), "{}", p.text);

    // By state: the approved one, with its approver.
    let p = root.get(&site, "/admin/authorizations?state=approved");
    assert!(p.text.contains("Showing 1–1 of 1"));
    let row = row_of(&p.text, &theirs[0].user_code);
    assert!(row.contains("alice"), "{row}");
    assert!(row.contains("other-0"));
    assert!(row.contains("Other app"));
    assert!(!row.contains("action=\"/admin/authorizations/"), "no Deny");
    // By application: only its rows, the choice kept in the form and the tabs.
    let q = format!("/admin/authorizations?client={other}");
    let p = root.get(&site, &q);
    assert!(p.text.contains("Showing 1–3 of 3"), "{}", p.text);
    assert!(p.text.contains("Pending (2)"));
    assert!(p.text.contains(&format!(
        "<option value=\"{other}\" selected>Other app</option>"
    )));
    assert!(p.text.contains(&format!(
        "href=\"/admin/authorizations?state=pending&amp;client={other}\""
    )));
    assert!(!p.text.contains("dev-0"));
    root.get(&site, "/admin/authorizations?state=nonsense")
        .expect(400);

    // Deny from a filtered page: back to the same view.
    let page = root.get(&site, &format!("{q}&state=pending"));
    let id = crate::csrf::deny_action_for(&page.text, &theirs[1].user_code);
    let r = root.post(
        &site,
        &format!("/admin/authorizations/{id}/deny"),
        &[("back", &format!("?state=pending&client={other}"))],
    );
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(
        r.location(),
        format!("/admin/authorizations?done=denied&state=pending&client={other}")
    );
    let p = root.follow(&site, &r);
    assert!(p.text.contains("Pending (1)") && p.text.contains("Denied (1)"));
}

/// The `<tr>` of the admin page's row for `user_code`.
fn row_of(html: &str, user_code: &str) -> String {
    let at = html
        .find(&format!(">{user_code}</code>"))
        .unwrap_or_else(|| panic!("{user_code} not on the page"));
    let start = html[..at].rfind("<tr>").unwrap();
    let end = at + html[at..].find("</tr>").unwrap();
    html[start..end].to_string()
}

/// The text of an HTML fragment: its tags removed.
fn text_of(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    out
}
