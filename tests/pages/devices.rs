//! "My devices" (rename, lock, unlock, remove; only one's own) and the admins' authorizations
//! page (admins only; Deny ends a pending code).

use std::time::Duration;

use crate::*;

/// Asserts a 303 back to /devices with `done`.
#[track_caller]
fn assert_done(r: &Page, done: &str) {
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.location(), format!("/devices?done={done}"));
    assert_secure_headers(r);
}

#[test]
fn rename_lock_unlock_and_remove_a_device() {
    let site = Site::new(&[]);
    let dev = site.device("alice", "laptop");
    let alice = sign_in(&site, "alice");
    let id = dev.device_id.clone();
    let page = alice.get(&site, "/devices");
    page.expect(200);
    assert!(page.text.contains("laptop"));
    for action in ["rename", "lock", "remove"] {
        assert!(
            page.text
                .contains(&format!("action=\"/devices/{id}/{action}\"")),
            "a {action} form"
        );
    }

    // Rename: escaped on the page.
    let r = alice.post(
        &site,
        &format!("/devices/{id}/rename"),
        &[("name", "  Work <laptop> & co  ")],
    );
    assert_done(&r, "renamed");
    let page = alice.get(&site, r.location());
    page.expect(200);
    assert_secure_page(&page);
    assert!(page.text.contains("The device was renamed."));
    assert!(
        page.text.contains("Work &lt;laptop&gt; &amp; co"),
        "{}",
        page.text
    );
    assert_eq!(
        cli_device(&site, "alice", &id).unwrap()["name"],
        "Work <laptop> & co"
    );

    // Lock: refreshing fails; the page offers Unlock.
    let r = alice.post(&site, &format!("/devices/{id}/lock"), &[]);
    assert_done(&r, "locked");
    let refused = site.refresh(&site.cli, &dev.refresh);
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.body["error"], "invalid_grant");
    let page = alice.get(&site, "/devices");
    assert!(page
        .text
        .contains("<span class=\"status locked\">locked</span>"));
    assert!(page
        .text
        .contains(&format!("action=\"/devices/{id}/unlock\"")));
    assert!(!page
        .text
        .contains(&format!("action=\"/devices/{id}/lock\"")));

    // Unlock: refreshing works again (with the same refresh token).
    let r = alice.post(&site, &format!("/devices/{id}/unlock"), &[]);
    assert_done(&r, "unlocked");
    let r = site.refresh(&site.cli, &dev.refresh);
    assert_eq!(r.status, 200, "refresh after unlocking: {}", r.text);
    let fresh = harness::tokens(&r.body);
    assert_ne!(cli_device(&site, "alice", &id).unwrap()["status"], "locked");

    // Remove: refreshing fails, the device is gone everywhere.
    let r = alice.post(&site, &format!("/devices/{id}/remove"), &[]);
    assert_done(&r, "removed");
    let refused = site.refresh(&site.cli, &fresh.refresh);
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert_eq!(refused.body["error"], "invalid_grant");
    let page = alice.get(&site, "/devices?done=removed");
    assert!(page.text.contains("The device was removed"));
    assert!(!page.text.contains(&id));
    assert!(page
        .text
        .contains("No device is signed in to your account."));
    assert!(cli_device(&site, "alice", &id).is_none());
    // Acting on it again: 404.
    for action in ["rename", "lock", "unlock", "remove"] {
        let r = alice.post(&site, &format!("/devices/{id}/{action}"), &[("name", "x")]);
        r.expect(404);
    }
}

#[test]
fn another_users_device_is_not_found_and_unchanged() {
    let site = Site::new(&[]);
    let bobs = site.device("bob", "bobs-laptop");
    let alices = site.device("alice", "alices-laptop");
    let alice = sign_in(&site, "alice");
    let page = alice.get(&site, "/devices");
    assert!(page.text.contains("alices-laptop"));
    assert!(!page.text.contains("bobs-laptop"), "only one's own devices");
    assert!(!page.text.contains(&bobs.device_id));

    site.cli_ok(&["device", "lock", &bobs.device_id], None);
    for action in ["rename", "lock", "unlock", "remove"] {
        let r = alice.post(
            &site,
            &format!("/devices/{}/{action}", bobs.device_id),
            &[("name", "mine now")],
        );
        assert_eq!(r.status, 404, "{action} on bob's device: {}", r.text);
        assert_secure_page(&r);
        assert!(r.text.contains("There is no such page."), "{}", r.text);
    }
    let d = cli_device(&site, "bob", &bobs.device_id).expect("bob's device is still there");
    assert_eq!(d["name"], "bobs-laptop");
    assert_eq!(d["status"], "locked", "alice's unlock did nothing");
    site.cli_ok(&["device", "unlock", &bobs.device_id], None);
    let r = site.refresh(&site.cli, &bobs.refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    // The unknown id answers exactly like bob's: ids cannot be probed.
    let unknown = alice.post(
        &site,
        "/devices/00000000-0000-4000-8000-000000000000/lock",
        &[],
    );
    let bobs_lock = alice.post(&site, &format!("/devices/{}/lock", bobs.device_id), &[]);
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.text, bobs_lock.text);
    // Alice's own device is untouched by all this.
    assert_eq!(
        cli_device(&site, "alice", &alices.device_id).unwrap()["status"],
        "active"
    );
}

#[test]
fn the_authorizations_page_is_for_admins_and_deny_ends_a_code() {
    let site = Site::new(&[("HALLPASS_OAUTH_POLL_INTERVAL", "1s")]);
    let alice = sign_in(&site, "alice");
    let root = sign_in(&site, "root");
    let code = site.pending("tv");
    let approved = site.pending("radio");
    site.approve(&approved.user_code, "alice", false);

    // A non-admin: 403 page, and no Authorizations link in the navigation.
    let r = alice.get(&site, "/admin/authorizations");
    r.expect(403);
    assert_secure_page(&r);
    assert!(r
        .text
        .contains("Only an administrator can see every device authorization."));
    assert!(!r.text.contains(&code.user_code));
    assert!(!alice
        .get(&site, "/devices")
        .text
        .contains("href=\"/admin/authorizations\""));

    // The admin sees both codes; only the pending one can be denied.
    let page = root.get(&site, "/admin/authorizations");
    page.expect(200);
    assert_secure_page(&page);
    assert!(root
        .get(&site, "/devices")
        .text
        .contains("href=\"/admin/authorizations\""));
    assert!(page.text.contains("Pending (1)"), "{}", page.text);
    assert!(page.text.contains("Approved, not yet exchanged (1)"));
    assert!(page.text.contains(&approved.user_code));
    let id = crate::csrf::deny_action_for(&page.text, &code.user_code);
    let deny = format!("/admin/authorizations/{id}/deny");

    // A non-admin posting the admin's form with their own valid token: refused.
    let r = alice.post(&site, &deny, &[]);
    r.expect(403);
    assert_secure_page(&r);
    assert_eq!(
        poll_outcome(&site, &site.cli, &code),
        "authorization_pending"
    );

    // The admin denies: the device hears access_denied.
    let r = root.post(&site, &deny, &[]);
    assert_eq!(r.status, 303, "{}", r.text);
    assert_eq!(r.location(), "/admin/authorizations?done=denied");
    let page = root.get(&site, r.location());
    assert!(page.text.contains("The authorization was denied."));
    assert!(page.text.contains("Pending (0)"));
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(poll_outcome(&site, &site.cli, &code), "access_denied");
    // Denying it again, or an unknown id: a page saying so, nothing else changes.
    let again = root.post(&site, &deny, &[]);
    again.expect(409);
    assert_secure_page(&again);
    root.post(
        &site,
        "/admin/authorizations/00000000-0000-4000-8000-000000000000/deny",
        &[],
    )
    .expect(404);
    // The approved code was not touched.
    let t = site.exchange(&site.cli, &approved.device_code);
    assert!(!t.access.is_empty());
}

#[test]
fn denying_a_code_that_is_no_longer_pending_says_so() {
    let site = Site::new(&[]);
    let root = sign_in(&site, "root");
    let code = site.pending("tv");
    let page = root.get(&site, "/admin/authorizations");
    let id = crate::csrf::deny_action_for(&page.text, &code.user_code);
    // Someone else decides first; the admin's page is now stale.
    site.cli_ok(&["device", "deny", &code.user_code], None);
    let r = root.post(&site, &format!("/admin/authorizations/{id}/deny"), &[]);
    r.expect(409);
    assert_secure_page(&r);
    assert!(
        r.text.contains("no longer pending"),
        "the page says why, not that the server failed:\n{}",
        r.notice().unwrap_or(&r.text)
    );
}
