//! Browser sessions: cookie flags, only a hash stored, sign-out, disabled users, lifetime,
//! sign-in answers that reveal nothing, and no open redirect after signing in.

use std::time::Duration;

use serde_json::json;

use crate::*;

/// The attributes of a `Set-Cookie` line, lower-cased, without the `name=value` pair.
fn attributes(line: &str) -> Vec<String> {
    line.split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

#[test]
fn session_cookie_flags_and_only_its_hash_is_stored() {
    let site = Site::new(&[]);
    let (_, login_cookie, _) = login_form(&site, "/devices", None);
    assert!(login_cookie.starts_with("hallpass_login="));
    let alice = sign_in(&site, "alice");
    assert_eq!(alice.name, "hallpass_session");
    assert!(alice.value.len() >= 32, "a long random id: {}", alice.value);
    let attrs = attributes(&alice.set_cookie);
    for want in ["httponly", "samesite=lax", "path=/", "max-age=43200"] {
        assert!(
            attrs.iter().any(|a| a == want),
            "{want} in {}",
            alice.set_cookie
        );
    }
    assert!(
        !attrs.iter().any(|a| a == "secure"),
        "plain http: no Secure"
    );
    assert!(!attrs.iter().any(|a| a.starts_with("domain")));
    // The server log never carries the session id, its CSRF token or the password.
    let log = std::fs::read_to_string(site.db_path().with_file_name("server.log")).unwrap();
    assert!(log.contains("/login"), "the log has the requests");
    for secret in [alice.value.as_str(), alice.csrf.as_str(), PASSWORD] {
        assert!(!log.contains(secret), "{secret:?} in the server log");
    }

    // The sign-in also clears the double-submit cookie.
    let (_, c, t) = login_form(&site, "/device", None);
    let r = post_login(&site, Some(&c), &t, "bob", PASSWORD, "/device", None);
    assert_eq!(r.status, 303);
    let cleared = r
        .set_cookie("hallpass_login")
        .expect("login cookie cleared");
    assert!(cleared.starts_with("hallpass_login=;"), "{cleared}");
    assert!(attributes(cleared).iter().any(|a| a == "max-age=0"));
    let login_attrs = attributes(
        login_form(&site, "/", None)
            .0
            .set_cookie("hallpass_login")
            .unwrap(),
    );
    assert!(login_attrs.iter().any(|a| a == "httponly"));
    assert!(login_attrs.iter().any(|a| a == "samesite=lax"));

    // Only a hash of the id is stored: not the value, anywhere in the database files.
    let rows: Vec<(Vec<u8>, String)> = site
        .query("SELECT id_hash, user_id FROM sessions", &[])
        .into_iter()
        .map(|r| {
            let hash = r[0].as_array().expect("a blob").iter();
            let hash = hash.map(|b| b.as_u64().unwrap() as u8).collect();
            (hash, r[1].as_str().expect("a user id").to_string())
        })
        .collect();
    assert_eq!(rows.len(), 2, "alice's and bob's sessions");
    let mine = rows
        .iter()
        .find(|(_, u)| *u == site.alice_id)
        .expect("alice's session");
    assert_ne!(mine.0, alice.value.as_bytes());
    assert_eq!(mine.0.len(), 32, "a SHA-256");
    if crate::harness::on_postgres() {
        return; // the rest reads the bytes of the SQLite files
    }
    let dir = site.db_path().parent().unwrap().to_path_buf();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if !path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("hallpass.db")
        {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        assert!(
            !bytes
                .windows(alice.value.len())
                .any(|w| w == alice.value.as_bytes()),
            "the session id is in {}",
            path.display()
        );
    }
}

#[test]
fn an_https_public_url_makes_cookies_secure_and_host_prefixed() {
    let site = Site::new(&[("HALLPASS_SERVER_PUBLIC_URL", "https://auth.example")]);
    let (form, login_cookie, _) = login_form(&site, "/devices", None);
    assert!(
        login_cookie.starts_with("__Host-hallpass_login="),
        "{login_cookie}"
    );
    let attrs = attributes(form.set_cookie("__Host-hallpass_login").unwrap());
    assert!(attrs.iter().any(|a| a == "secure"));
    assert!(attrs.iter().any(|a| a == "path=/"));
    assert!(!attrs.iter().any(|a| a.starts_with("domain")));

    let alice = sign_in(&site, "alice");
    assert_eq!(alice.name, "__Host-hallpass_session");
    let attrs = attributes(&alice.set_cookie);
    for want in ["secure", "httponly", "samesite=lax", "path=/"] {
        assert!(
            attrs.iter().any(|a| a == want),
            "{want} in {}",
            alice.set_cookie
        );
    }
    assert!(!attrs.iter().any(|a| a.starts_with("domain")));
    // The unprefixed name is not a session (a sibling subdomain could have set it).
    let plain = format!("hallpass_session={}", alice.value);
    let r = send(&site, "GET", "/devices", Some(&plain), None, &[]);
    assert_eq!(r.status, 303, "{}", r.text);
    assert!(r.location().starts_with("/login"));
    alice.get(&site, "/devices").expect(200);
    // The double-submit cookie without its prefix does not pass either.
    let (_, c, t) = login_form(&site, "/devices", None);
    let unprefixed = c.replacen("__Host-", "", 1);
    let r = post_login(
        &site,
        Some(&unprefixed),
        &t,
        "alice",
        PASSWORD,
        "/devices",
        None,
    );
    r.expect(403);
}

#[test]
fn a_planted_session_id_is_never_adopted() {
    let site = Site::new(&[]);
    let planted = "hallpass_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
    let (_, c, t) = login_form(&site, "/devices", None);
    let cookies = format!("{planted}; {c}");
    let r = post_login(
        &site,
        Some(&cookies),
        &t,
        "alice",
        PASSWORD,
        "/devices",
        None,
    );
    assert_eq!(r.status, 303, "{}", r.text);
    let line = r
        .set_cookie("hallpass_session")
        .expect("a new session cookie");
    assert!(!line.starts_with(&format!("{planted};")), "{line}");
    let r = send(&site, "GET", "/devices", Some(planted), None, &[]);
    assert_eq!(r.status, 303, "the planted id signs nobody in");
}

#[test]
fn signing_out_ends_the_session() {
    let site = Site::new(&[]);
    let alice = sign_in(&site, "alice");
    let r = alice.post(&site, "/logout", &[]);
    assert_eq!((r.status, r.location()), (303, "/login"));
    assert_secure_headers(&r);
    let cleared = r.set_cookie("hallpass_session").expect("cookie cleared");
    assert!(cleared.starts_with("hallpass_session=;"), "{cleared}");
    assert!(attributes(cleared).iter().any(|a| a == "max-age=0"));
    // The old cookie no longer works anywhere.
    for path in ["/devices", "/device", "/admin/authorizations"] {
        let r = alice.get(&site, path);
        assert_eq!(r.status, 303, "{path}: {}", r.text);
        assert_eq!(r.location(), format!("/login?next={}", enc(path)));
    }
    let r = alice.api(&site, "GET", "/api/v1/devices", None, None);
    harness::assert_error(&r, 401, "unauthenticated");
    let n = site.query("SELECT count(*) FROM sessions", &[])[0][0].as_i64();
    assert_eq!(n, Some(0));
}

#[test]
fn wrong_password_and_unknown_user_get_the_same_answer() {
    let site = Site::new(&[]);
    let root = site.login(&site.cli, "root", "admin");
    let r = site.patch(
        &format!("/api/v1/admin/users/{}", site.bob_id),
        &root.access,
        json!({"disabled": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text);

    let attempt = |user: &str, password: &str| {
        let (_, c, t) = login_form(&site, "/devices", None);
        let r = post_login(&site, Some(&c), &t, user, password, "/devices", None);
        r.expect(401);
        assert_secure_page(&r);
        assert!(r.set_cookie("hallpass_session").is_none());
        // The page without what differs by design: the fresh form token and the name typed.
        let token = r.hidden("csrf").unwrap();
        r.text
            .replace(&token, "TOKEN")
            .replace(&format!("value=\"{user}\""), "value=\"NAME\"")
    };
    let wrong = attempt("alice", "not the password");
    let unknown = attempt("nobody", PASSWORD);
    let disabled = attempt("bob", PASSWORD);
    assert!(wrong.contains("Wrong username or password."), "{wrong}");
    assert_eq!(wrong, unknown);
    assert_eq!(wrong, disabled);
}

#[test]
fn only_local_paths_are_followed_after_signing_in() {
    let site = Site::new(&[]);
    let bad = [
        "//evil.example",
        "https://evil.example",
        "/\\evil.example",
        "\\\\evil.example",
        "//evil.example/%2F..",
        "http:/evil.example",
        "javascript:alert(1)",
    ];
    // The form keeps only a local `next`.
    for next in bad {
        let (page, _, _) = login_form(&site, next, None);
        assert_eq!(page.hidden("next").as_deref(), Some("/device"), "{next}");
    }
    // Posting a foreign `next` anyway: signed in, sent to /device.
    let (_, c, t) = login_form(&site, "/devices", None);
    let r = post_login(
        &site,
        Some(&c),
        &t,
        "alice",
        PASSWORD,
        "//evil.example",
        None,
    );
    assert_eq!((r.status, r.location()), (303, "/device"));
    let (_, c, t) = login_form(&site, "/devices", None);
    let r = post_login(
        &site,
        Some(&c),
        &t,
        "alice",
        PASSWORD,
        "https://evil.example",
        None,
    );
    assert_eq!((r.status, r.location()), (303, "/device"));
    let pair = r
        .set_cookie("hallpass_session")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    // Already signed in, /login goes straight on: only to local paths.
    for next in bad {
        let r = send(
            &site,
            "GET",
            &format!("/login?next={}", enc(next)),
            Some(&pair),
            None,
            &[],
        );
        assert_eq!((r.status, r.location()), (303, "/device"), "{next}");
    }
    let r = send(
        &site,
        "GET",
        &format!("/login?next={}", enc("/devices?done=renamed")),
        Some(&pair),
        None,
        &[],
    );
    assert_eq!(r.location(), "/devices?done=renamed");
}

#[test]
fn signed_out_pages_come_back_after_signing_in() {
    let site = Site::new(&[]);
    let code = site.pending("tv");
    let path = confirm_path(&code.user_code.to_lowercase());
    let r = get(&site, &path);
    assert_eq!(r.status, 303);
    let login = r.location().to_string();
    assert_eq!(login, format!("/login?next={}", enc(&path)));
    // Follow it: the form remembers where to go, and signing in goes there.
    let page = get(&site, &login);
    page.expect(200);
    assert_secure_page(&page);
    assert_eq!(page.hidden("next").as_deref(), Some(path.as_str()));
    let line = page.set_cookie("hallpass_login").unwrap();
    let cookie = line.split(';').next().unwrap();
    let r = post_login(
        &site,
        Some(cookie),
        &page.hidden("csrf").unwrap(),
        "alice",
        PASSWORD,
        &page.hidden("next").unwrap(),
        None,
    );
    assert_eq!((r.status, r.location()), (303, path.as_str()));
    let pair = r
        .set_cookie("hallpass_session")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_string();
    let confirm = send(&site, "GET", &path, Some(&pair), None, &[]);
    confirm.expect(200);
    assert!(confirm.text.contains(&code.user_code));
}

#[test]
fn disabling_a_user_ends_their_sessions() {
    let site = Site::new(&[]);
    let root = site.login(&site.cli, "root", "admin");
    let alice = sign_in(&site, "alice");
    let bob = sign_in(&site, "bob");
    let r = site.patch(
        &format!("/api/v1/admin/users/{}", site.alice_id),
        &root.access,
        json!({"disabled": true}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let r = alice.get(&site, "/devices");
    assert_eq!(r.status, 303);
    assert!(r.location().starts_with("/login"));
    harness::assert_error(
        &alice.api(&site, "GET", "/api/v1/devices", None, None),
        401,
        "unauthenticated",
    );
    // Others stay signed in.
    bob.get(&site, "/devices").expect(200);
    // Enabling the account again does not bring the old session back.
    let r = site.patch(
        &format!("/api/v1/admin/users/{}", site.alice_id),
        &root.access,
        json!({"disabled": false}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(alice.get(&site, "/devices").status, 303);
}

#[test]
fn sessions_end_after_their_lifetime() {
    let site = Site::new(&[("HALLPASS_SESSIONS_LIFETIME", "2s")]);
    let alice = sign_in(&site, "alice");
    assert!(
        attributes(&alice.set_cookie)
            .iter()
            .any(|a| a == "max-age=2"),
        "{}",
        alice.set_cookie
    );
    alice.get(&site, "/devices").expect(200);
    std::thread::sleep(Duration::from_millis(2300));
    let r = alice.get(&site, "/devices");
    assert_eq!(r.status, 303, "{}", r.text);
    assert!(r.location().starts_with("/login"));
    harness::assert_error(
        &alice.api(&site, "GET", "/api/v1/devices", None, None),
        401,
        "unauthenticated",
    );
}
