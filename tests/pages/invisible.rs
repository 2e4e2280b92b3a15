//! Invisible characters (Unicode format characters such as U+202E RIGHT-TO-LEFT OVERRIDE and
//! U+200B ZERO WIDTH SPACE, and control characters) would let a device make the approval page
//! show something other than what it sent. Every place that takes a name a person reads refuses
//! them, naming the field (issue 18 §8).

use serde_json::json;

use crate::*;

/// Names that look harmless on a page but are not what they seem.
const SPOOFS: &[(&str, &str)] = &[
    ("U+202E", "moc.elgoog\u{202E}"),
    ("U+200B", "living\u{200B}room"),
    ("U+2066", "tv\u{2066}x\u{2069}"),
    ("U+FEFF", "\u{FEFF}printer"),
    ("U+E0041", "lamp\u{E0041}"),
    ("U+2028", "two\u{2028}lines"),
    ("U+0007", "bell\u{7}"),
];

#[test]
fn a_device_cannot_report_invisible_characters() {
    let site = Site::new(&[]);
    for field in ["device_name", "os", "hostname"] {
        for (point, value) in SPOOFS {
            let r = site.form(
                "/oauth/device_authorization",
                &[("client_id", &site.cli), (field, value)],
            );
            assert_eq!(r.status, 400, "{field} {point}: {}", r.text);
            assert_eq!(r.body["error"], "invalid_request", "{}", r.text);
            let why = r.body["error_description"].as_str().unwrap();
            assert!(
                why.contains(&format!("`{field}`")) && why.contains(point),
                "{field} {point}: {why}"
            );
        }
    }
    // Visible text from any script is fine, emoji included.
    let r = site.form(
        "/oauth/device_authorization",
        &[
            ("client_id", &site.cli),
            ("device_name", "Wohnzimmer-Fernseher 📺"),
            ("os", "ОС Linux"),
            ("hostname", "テレビ.local"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let code = r.body["user_code"].as_str().unwrap().to_string();
    let alice = sign_in(&site, "alice");
    let page = alice.get(&site, &confirm_path(&code));
    page.expect(200);
    // As a person reads it: the page may wrap words in markup (long words in nowrap spans).
    let text = visible_text(&page.text);
    for shown in ["Wohnzimmer-Fernseher 📺", "ОС Linux", "テレビ.local"] {
        assert!(text.contains(shown), "{shown}: {}", page.text);
    }
    // Nothing refused was stored: the only authorizations are the good one and root's.
    let admin = site.login(&site.cli, "root", "devices admin");
    let r = site.get("/api/v1/admin/oauth/device-authorizations", &admin.access);
    let all = r.body["device_authorisations"].as_array().unwrap();
    assert_eq!(all.len(), 2, "{}", r.text);
}

#[test]
fn names_from_the_api_the_page_and_the_command_line_are_checked_too() {
    let site = Site::new(&[]);
    let dev = site.device("alice", "laptop");
    let root = site.login(&site.cli, "root", "devices admin");
    let alice = sign_in(&site, "alice");
    for (point, value) in SPOOFS {
        // Renaming a device through the API, with a token or a browser session.
        let path = format!("/api/v1/devices/{}", dev.device_id);
        let r = site.put(&path, &dev.access, json!({ "name": value }));
        harness::assert_bad_field(&r, "name");
        assert!(
            r.body["message"].as_str().unwrap().contains(point),
            "{}",
            r.text
        );
        let r = alice.api(
            &site,
            "PUT",
            &path,
            Some(&alice.csrf),
            Some(json!({ "name": value })),
        );
        harness::assert_bad_field(&r, "name");
        // Renaming it on "My devices".
        let r = alice.post(
            &site,
            &format!("/devices/{}/rename", dev.device_id),
            &[("name", value)],
        );
        assert_eq!(r.status, 400, "{point}: {}", r.text);
        assert!(r.text.contains(point), "{}", r.text);
        // Client and user names from the admin API.
        let r = site.post(
            "/api/v1/admin/oauth/clients",
            &root.access,
            Some(json!({ "name": value })),
        );
        harness::assert_bad_field(&r, "name");
        let r = site.patch(
            &format!("/api/v1/admin/oauth/clients/{}", site.cli),
            &root.access,
            json!({ "name": value }),
        );
        harness::assert_bad_field(&r, "name");
        let r = site.post(
            "/api/v1/admin/users",
            &root.access,
            Some(json!({ "username": value, "password": "long enough" })),
        );
        harness::assert_bad_field(&r, "username");
        // And from the command line: exit 1 with one line naming the character.
        for args in [
            vec!["client", "add", "--name", value],
            vec!["user", "add", value, "--password-stdin"],
        ] {
            let out = site.cli(&args, Some("long enough\n"));
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
            assert!(err.contains(point), "{args:?}: {err}");
        }
    }
    // The device kept its name; no client or user was made.
    assert_eq!(
        cli_device(&site, "alice", &dev.device_id).unwrap()["name"],
        "laptop"
    );
    let clients: serde_json::Value =
        serde_json::from_str(&site.cli_ok(&["client", "list"], None)).unwrap();
    assert_eq!(clients.as_array().map(Vec::len), Some(1), "{clients}");
    let r = site.get("/api/v1/admin/users", &root.access);
    assert_eq!(r.body["total"], 3, "{}", r.text);
}

/// `html` without its tags: the text a browser shows, for comparing what a person reads.
fn visible_text(html: &str) -> String {
    let mut out = String::with_capacity(html.len());
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
