//! The device flow over HTTP: a code typed however a person types it, the confirmation page,
//! approve (trusted or not) and deny, and what a used, denied, expired or unknown code shows.

use std::time::Duration;

use crate::*;

const USED: &str = "This code has already been used.";
const DENIED: &str = "This code was denied.";
const EXPIRED: &str = "This code has expired.";
const UNKNOWN: &str = "This code is not valid.";

/// Asserts a problem page: `status`, the entry form again, and `message` in its notice.
#[track_caller]
fn assert_problem(p: &Page, status: u16, message: &str) {
    p.expect(status);
    assert_secure_page(p);
    let notice = p
        .notice()
        .unwrap_or_else(|| panic!("no notice:\n{}", p.text));
    assert!(notice.starts_with(message), "{notice:?} is not {message:?}");
    assert!(!p.text.contains("Approve this device?"));
    assert!(
        p.text.contains("name=\"user_code\""),
        "the entry form is shown again"
    );
}

#[test]
fn approving_with_trust_gives_the_device_tokens_and_a_trusted_record() {
    let site = Site::new(&[("HALLPASS_OAUTH_POLL_INTERVAL", "1s")]);
    let alice = sign_in(&site, "alice");
    let code = site.pending("tv");
    let canonical = code.user_code.clone();
    let bare = canonical.replace('-', "");
    let spaced: String = bare.to_lowercase().chars().flat_map(|c| [c, ' ']).collect();
    // Lower case, no dash, spaces anywhere: all the same code.
    for typed in [
        bare.to_lowercase(),
        format!("  {}  ", canonical.to_lowercase()),
        spaced,
        format!("{} {}", &bare[..4], &bare[4..]),
        canonical.clone(),
    ] {
        let page = alice.get(&site, &confirm_path(&typed));
        assert_eq!(page.status, 200, "{typed:?}: {}", page.text);
        assert_secure_page(&page);
        assert!(page.text.contains("Approve this device?"));
        assert_eq!(
            page.hidden("user_code").as_deref(),
            Some(canonical.as_str())
        );
        assert!(page
            .text
            .contains(&format!("<code class=\"usercode\">{canonical}</code>")));
        for fact in [
            "<dd>tv</dd>",
            "<dd>linux</dd>",
            "<dd>tv.local</dd>",
            "<dd>127.0.0.1</dd>",
        ] {
            assert!(page.text.contains(fact), "{fact} on the confirmation page");
        }
        assert!(
            page.text.contains("<strong>cli</strong>"),
            "the client's name"
        );
        assert!(page.text.contains("<strong>alice</strong>"), "who signs in");
        assert!(page.text.contains("<code>devices</code>"), "the scope");
    }
    // Looking at the page approves nothing.
    assert_eq!(
        poll_outcome(&site, &site.cli, &code),
        "authorization_pending"
    );

    let r = alice.post(
        &site,
        "/device",
        &[
            ("user_code", &bare.to_lowercase()),
            ("action", "approve"),
            ("trusted", "on"),
        ],
    );
    // Post/redirect/get (issue 21): the result is the page the 303 leads to.
    assert_eq!(r.status, 303, "{}", r.text);
    assert!(r.location().starts_with("/device/approved?device="));
    let r = alice.follow(&site, &r);
    r.expect(200);
    assert_secure_page(&r);
    assert!(r.text.contains("Device approved"), "{}", r.text);
    assert!(r.text.contains("30 days"), "the trusted lifetime");
    std::thread::sleep(Duration::from_millis(1100));
    let tokens = site.exchange(&site.cli, &code.device_code);
    assert_eq!(tokens.scope, "devices");
    assert!(!tokens.refresh.is_empty());

    // Trusted on /devices, in the API and on the command line.
    let mine = alice.get(&site, "/devices");
    mine.expect(200);
    assert!(mine
        .text
        .contains(&format!("id=\"d-{}\"", tokens.device_id)));
    assert!(
        mine.text
            .contains("<dt>Trusted</dt><dd>Yes (longer lifetime)</dd>"),
        "{}",
        mine.text
    );
    let api = site.get(
        &format!("/api/v1/devices/{}", tokens.device_id),
        &tokens.access,
    );
    assert_eq!(api.status, 200, "{}", api.text);
    assert_eq!(api.body["trusted_device"], true);
    assert_eq!(api.body["user_id"], site.alice_id.as_str());
    assert_eq!(
        cli_device(&site, "alice", &tokens.device_id).unwrap()["trusted_device"],
        true
    );

    // The server log never carries the user code (its requests are logged by route).
    let log = std::fs::read_to_string(site.db_path().with_file_name("server.log")).unwrap();
    assert!(log.contains("/device"));
    assert!(
        !log.contains(&canonical) && !log.contains(&bare),
        "the user code in the log"
    );
    assert!(!log.contains(&bare.to_lowercase()));

    // The code is used now.
    assert_problem(&alice.get(&site, &confirm_path(&canonical)), 410, USED);
    let r = alice.post(
        &site,
        "/device",
        &[("user_code", &canonical), ("action", "approve")],
    );
    assert_problem(&r, 410, USED);

    // Without "trust this device": the short lifetime, not trusted.
    let code = site.pending("phone");
    let r = alice.post(
        &site,
        "/device",
        &[("user_code", &code.user_code), ("action", "approve")],
    );
    let r = alice.follow(&site, &r);
    r.expect(200);
    assert!(r.text.contains("1 day"), "the untrusted lifetime");
    let tokens = site.exchange(&site.cli, &code.device_code);
    let api = site.get(
        &format!("/api/v1/devices/{}", tokens.device_id),
        &tokens.access,
    );
    assert_eq!(api.body["trusted_device"], false);
}

#[test]
fn denying_tells_the_device_access_denied() {
    let site = Site::new(&[("HALLPASS_OAUTH_POLL_INTERVAL", "1s")]);
    let alice = sign_in(&site, "alice");
    let code = site.pending("tv");
    assert_eq!(
        poll_outcome(&site, &site.cli, &code),
        "authorization_pending"
    );
    let r = alice.post(
        &site,
        "/device",
        &[("user_code", &code.user_code), ("action", "deny")],
    );
    assert_eq!(
        (r.status, r.location()),
        (303, "/device/denied"),
        "{}",
        r.text
    );
    let r = alice.follow(&site, &r);
    r.expect(200);
    assert_secure_page(&r);
    assert!(r.text.contains("Device denied"), "{}", r.text);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(poll_outcome(&site, &site.cli, &code), "access_denied");
    assert_problem(
        &alice.get(&site, &confirm_path(&code.user_code)),
        410,
        DENIED,
    );
    // Approving it afterwards does not work.
    let r = alice.post(
        &site,
        "/device",
        &[("user_code", &code.user_code), ("action", "approve")],
    );
    assert_problem(&r, 410, DENIED);
    assert!(cli_devices(&site, "alice").is_empty());
}

#[test]
fn an_expired_code_says_so() {
    let site = Site::new(&[
        ("HALLPASS_OAUTH_DEVICE_CODE_LIFETIME", "2s"),
        ("HALLPASS_OAUTH_POLL_INTERVAL", "1s"),
    ]);
    let alice = sign_in(&site, "alice");
    let code = site.pending("tv");
    alice.get(&site, &confirm_path(&code.user_code)).expect(200);
    std::thread::sleep(Duration::from_millis(2200));
    assert_problem(
        &alice.get(&site, &confirm_path(&code.user_code)),
        410,
        EXPIRED,
    );
    let r = alice.post(
        &site,
        "/device",
        &[("user_code", &code.user_code), ("action", "approve")],
    );
    assert_problem(&r, 410, EXPIRED);
    assert_eq!(poll_outcome(&site, &site.cli, &code), "expired_token");
}

#[test]
fn an_unknown_code_reveals_nothing_about_other_codes() {
    let site = Site::new(&[("HALLPASS_LIMITS_CODE_ENTRY_FAILURES_PER_MINUTE", "100")]);
    let alice = sign_in(&site, "alice");
    let live = site.pending("tv");
    let bare = live.user_code.replace('-', "");
    let mut pages = Vec::new();
    for typed in [
        other_code(&live.user_code, 0),
        other_code(&live.user_code, 1).to_lowercase(),
        format!("{bare}B"),
        "hello".to_string(),
        "AEIO-UAEI".to_string(),
    ] {
        let p = alice.get(&site, &confirm_path(&typed));
        // Text that cannot be a code is told what a code looks like (issue 21), which
        // depends only on what was typed; a well-formed unknown code gets the same words
        // every time.
        let well_formed = typed.replace('-', "").len() == 8 && !typed.contains('A');
        if well_formed {
            assert_problem(&p, 404, UNKNOWN);
        } else {
            assert_problem(&p, 400, "A code has 8 letters");
        }
        // Nothing of the live code, beyond what was typed and is shown back.
        let rest = p.text.replace(&format!("value=\"{typed}\""), "");
        assert!(!rest.contains(&live.user_code) && !rest.contains(&bare));
        let notice = p.notice().unwrap().to_string();
        pages.push((typed, notice, p));
    }
    for (typed, notice, p) in &pages {
        if p.status == 404 {
            assert_eq!(notice, &pages[0].1, "{typed:?}: the same words every time");
        }
    }
    // Posted: the same answer, and the live code stays pending.
    let r = alice.post(
        &site,
        "/device",
        &[
            ("user_code", &other_code(&live.user_code, 2)),
            ("action", "approve"),
        ],
    );
    assert_problem(&r, 404, UNKNOWN);
    assert_eq!(r.notice().unwrap(), pages[0].1);
    assert_eq!(
        poll_outcome(&site, &site.cli, &live),
        "authorization_pending"
    );
}

#[test]
fn a_code_asking_for_admin_needs_an_administrator() {
    let site = Site::new(&[("HALLPASS_OAUTH_POLL_INTERVAL", "1s")]);
    let alice = sign_in(&site, "alice");
    let root = sign_in(&site, "root");
    let code = site.start_device(&site.cli, "devices admin", "ops");
    // A non-admin sees the request with why it cannot approve it, and only Deny; a forged
    // approval is refused.
    let r = alice.get(&site, &confirm_path(&code.user_code));
    r.expect(200);
    assert!(r.text.contains("which only an administrator can approve"));
    assert!(!r.text.contains(r#"value="approve""#));
    assert!(r.text.contains(r#"value="deny""#));
    let r = alice.post(
        &site,
        "/device",
        &[("user_code", &code.user_code), ("action", "approve")],
    );
    assert_problem(&r, 403, "This device asks for administrator access");
    assert_eq!(
        poll_outcome(&site, &site.cli, &code),
        "authorization_pending"
    );
    // The administrator is warned, then approves.
    let page = root.get(&site, &confirm_path(&code.user_code));
    page.expect(200);
    assert!(page
        .text
        .contains("This device asks for administrator access."));
    assert!(page.text.contains("<code>admin</code>"));
    let r = root.post(
        &site,
        "/device",
        &[("user_code", &code.user_code), ("action", "approve")],
    );
    root.follow(&site, &r).expect(200);
    std::thread::sleep(Duration::from_millis(1100));
    let t = site.exchange(&site.cli, &code.device_code);
    assert_eq!(t.scope, "admin devices");
}
