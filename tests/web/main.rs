//! The approval pages in a real browser (issue 3): Debian's Chromium driven through ChromeDriver
//! over WebDriver (fantoccini), against the real binary. `.ci/run` installs both.
//!
//! A device asks for a code; the browser signs in, types the code in lower case without the
//! dash, approves with "trust this device"; the device's next poll gets tokens; /devices shows
//! it trusted; removing it there (after its second step) kills its refresh token. Another run
//! opens the complete URI and denies. Issue 21: the admins' page at 390 px and 1280 px with no
//! cell broken inside a word, post/redirect/get (reload and Back), the notice of a device on
//! another network, the styled 404 and 429 pages, and the second step of remove and deny.
//!
//! Screenshots of the pages go to `$CARGO_TARGET_TMPDIR/screenshots/`; with
//! `UPDATE_SCREENSHOTS=1` the ones the README shows are also written to
//! `docs/screenshots/` (admin, confirmation and devices pages, phone and desktop).

#[allow(dead_code)]
#[path = "../api/harness.rs"]
mod harness;
#[path = "../support/pg.rs"]
mod pg;

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};
use harness::{Server, PASSWORD};

/// ChromeDriver and one headless Chromium session, driven synchronously.
struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let chromium = which("chromium");
        let chromedriver = which("chromedriver");
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = tempfile::tempdir().unwrap();
        // The flags that keep Chromium quiet on a machine without outside network.
        let args = [
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=390,1000".into(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": chromium, "args": args }),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(Client::with_capabilities_and_connector(
                &format!("http://127.0.0.1:{port}"),
                &caps,
                hyper_util::client::legacy::connect::HttpConnector::new(),
            ))
            .expect("WebDriver session with Chromium");
        Browser {
            rt,
            client: Some(client),
            driver,
            _profile: profile,
        }
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    fn goto(&self, url: &str) {
        self.rt.block_on(self.c().goto(url)).unwrap();
    }

    fn path(&self) -> String {
        let url = self.rt.block_on(self.c().current_url()).unwrap();
        match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_string(),
        }
    }

    /// Types into the input matched by `css`.
    fn fill(&self, css: &str, text: &str) {
        self.rt.block_on(async {
            let e = self.c().find(Locator::Css(css)).await.unwrap();
            e.clear().await.unwrap();
            e.send_keys(text).await.unwrap();
        });
    }

    /// Clicks what the XPath `xpath` matches, staying on the page (a `<summary>`).
    fn click_xpath(&self, xpath: &str) {
        self.rt.block_on(async {
            self.c()
                .find(Locator::XPath(xpath))
                .await
                .unwrap_or_else(|e| panic!("no {xpath}: {e}"))
                .click()
                .await
                .unwrap();
        });
    }

    /// Clicks something that does not leave the page (a checkbox).
    fn click(&self, css: &str) {
        self.rt.block_on(async {
            self.c()
                .find(Locator::Css(css))
                .await
                .unwrap_or_else(|e| panic!("no {css}: {e}"))
                .click()
                .await
                .unwrap();
        });
    }

    /// Clicks a submit button and waits until the next page has replaced this one.
    fn submit(&self, css: &str) {
        self.submit_at(Locator::Css(css), css)
    }

    /// [`Browser::submit`] for a button found by `locator`.
    fn submit_at(&self, locator: Locator<'_>, css: &str) {
        self.rt.block_on(async {
            let old = self.c().find(Locator::Css("html")).await.unwrap();
            self.c()
                .find(locator)
                .await
                .unwrap_or_else(|e| panic!("no {css}: {e}"))
                .click()
                .await
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(15);
            // The old document's root goes stale once the new page is loaded.
            while old.tag_name().await.is_ok() {
                assert!(
                    Instant::now() < deadline,
                    "no new page after clicking {css}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let _ = self.c().find(Locator::Css("main")).await;
        });
    }

    /// The visible text of the page's main content.
    fn text(&self) -> String {
        self.rt.block_on(async {
            self.c()
                .find(Locator::Css("main"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    }

    fn heading(&self) -> String {
        self.rt.block_on(async {
            self.c()
                .find(Locator::Css("h1"))
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    }

    fn is_checked(&self, css: &str) -> bool {
        self.rt.block_on(async {
            self.c()
                .find(Locator::Css(css))
                .await
                .unwrap()
                .is_selected()
                .await
                .unwrap()
        })
    }

    fn resize(&self, width: u32, height: u32) {
        self.rt
            .block_on(self.c().set_window_size(width, height))
            .unwrap();
    }

    /// Saves a PNG of the viewport as `name`.png under the screenshot folder.
    fn screenshot(&self, name: &str) {
        let png = self.rt.block_on(self.c().screenshot()).unwrap();
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
        if DOCS_SCREENSHOTS.contains(&name) && std::env::var_os("UPDATE_SCREENSHOTS").is_some() {
            let docs = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/screenshots");
            std::fs::write(docs.join(format!("{name}.png")), &png).unwrap();
        }
    }

    /// A screenshot of the whole page at `width`: the window is made as tall as the page.
    fn screenshot_page(&self, name: &str, width: u32) {
        self.resize(width, 900);
        // The window is taller than the page's viewport by the (emulated) browser frame.
        let height = self
            .js("return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight")
            .as_u64()
            .unwrap_or(900)
            .clamp(400, 5000) as u32;
        self.resize(width, height);
        self.screenshot(name);
        self.resize(width, 900);
    }

    /// Runs a script in the page and returns its result.
    fn js(&self, script: &str) -> serde_json::Value {
        self.rt
            .block_on(self.c().execute(script, vec![]))
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// The browser's Back button; waits for the page.
    fn back(&self) {
        self.rt.block_on(self.c().back()).unwrap();
        let _ = self.rt.block_on(self.c().find(Locator::Css("main")));
    }

    /// The browser's Reload button; waits for the page.
    fn reload(&self) {
        self.rt.block_on(self.c().refresh()).unwrap();
        let _ = self.rt.block_on(self.c().find(Locator::Css("main")));
    }

    /// Whether the element matched by `css` is shown (has a size on the page).
    fn visible(&self, css: &str) -> bool {
        self.js(&format!(
            "const e = document.querySelector({css:?}); \
             return !!e && e.getBoundingClientRect().width > 0 && e.getBoundingClientRect().height > 0;"
        ))
        .as_bool()
        .unwrap()
    }

    /// Every way the table cells of the page fail to read well: a cell whose content is wider
    /// than the cell (`scrollWidth > clientWidth`), a word broken across two lines (each word
    /// of each text node measured with a Range: more than one line box), and a page wider than
    /// the window.
    fn layout_problems(&self) -> Vec<String> {
        let v = self.js(LAYOUT_CHECK);
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_string())
            .collect()
    }

    /// Signs in on the login page the browser is on.
    fn sign_in(&self, user: &str) {
        assert_eq!(self.heading(), "Sign in", "{}", self.text());
        self.fill("#username", user);
        self.fill("#password", PASSWORD);
        self.submit("button[type=submit]");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// The screenshots the README shows, refreshed in docs/screenshots with
/// `UPDATE_SCREENSHOTS=1`.
const DOCS_SCREENSHOTS: &[&str] = &[
    "admin-phone",
    "admin-desktop",
    "confirm-phone",
    "confirm-desktop",
    "devices-phone",
    "devices-desktop",
];

/// See [`Browser::layout_problems`]. Cells hidden on purpose (the table's header row on a phone,
/// text inside a closed `<details>`) have no size and are skipped.
const LAYOUT_CHECK: &str = r#"
const problems = [];
const shown = (e) => { const r = e.getBoundingClientRect(); return r.width > 2 && r.height > 2; };
for (const cell of document.querySelectorAll('main td, main th')) {
  if (!shown(cell) || cell.closest('.visually-hidden')) continue;
  const label = cell.getAttribute('data-label') || cell.tagName;
  if (cell.scrollWidth > cell.clientWidth + 1) {
    problems.push(`${label}: content ${cell.scrollWidth}px wide in a ${cell.clientWidth}px cell: ${cell.textContent.trim()}`);
  }
  const walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT);
  let node;
  while ((node = walker.nextNode())) {
    const re = /\S+/g;
    let m;
    while ((m = re.exec(node.textContent))) {
      const range = document.createRange();
      range.setStart(node, m.index);
      range.setEnd(node, m.index + m[0].length);
      const lines = new Set([...range.getClientRects()].filter(r => r.width > 0).map(r => Math.round(r.top)));
      if (lines.size > 1) problems.push(`${label}: "${m[0]}" is broken over ${lines.size} lines`);
    }
  }
}
if (document.documentElement.scrollWidth > window.innerWidth + 1) {
  problems.push(`the page is ${document.documentElement.scrollWidth}px wide in a ${window.innerWidth}px window`);
}
return problems;
"#;

fn screenshot_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("screenshots")
}

/// Finds a program on PATH; the test fails (never skips) without it: `.ci/run` installs it.
fn which(name: &str) -> String {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    });
    found
        .unwrap_or_else(|| {
            panic!("`{name}` is not installed; `.ci/run` installs Debian's chromium and chromium-driver")
        })
        .display()
        .to_string()
}

fn server() -> Server {
    Server::start_with(&[("HALLPASS_OAUTH_POLL_INTERVAL", "1s")])
}

#[test]
fn approve_with_trust_in_the_browser_then_remove_the_device() {
    let s = server();
    s.add_user("alice", false);
    let (client_id, _) = s.add_client("Living room TV", "read", &[]);
    // A device with a hostile name: it must show as text, never as markup.
    let started = s.start_device(
        &client_id,
        "read",
        "<b>Kitchen</b> <script>alert(1)</script>",
    );
    assert_eq!(
        s.poll(&client_id, &started.device_code).body["error"],
        "authorization_pending"
    );

    let b = Browser::start();
    // The verification_uri: signed out, so to the sign-in page and back.
    b.goto(&s.url("/device"));
    assert!(b.path().starts_with("/login?next="), "{}", b.path());
    b.screenshot("login-phone");
    b.sign_in("alice");
    assert_eq!(b.path(), "/device");
    assert_eq!(b.heading(), "Connect a device");

    // Typed in lower case, without the dash, with a stray space.
    let typed = format!(" {}", started.user_code.replace('-', "").to_lowercase());
    b.fill("#user_code", &typed);
    b.submit("main button[type=submit]");
    assert_eq!(b.heading(), "Approve this device?", "{}", b.text());
    let page = b.text();
    for shown in [
        "Living room TV",
        "<b>Kitchen</b> <script>alert(1)</script>",
        "read",
        &started.user_code,
        "127.0.0.1",
        "Trust this device",
        "30 days",
    ] {
        assert!(
            page.contains(shown),
            "confirmation page lacks {shown:?}:\n{page}"
        );
    }
    b.screenshot("confirm-same-network-phone");
    b.resize(1280, 900);
    b.screenshot("confirm-same-network-desktop");
    b.resize(390, 1000);

    assert!(!b.is_checked("input[name=trusted]"));
    b.click("input[name=trusted]");
    assert!(b.is_checked("input[name=trusted]"));
    b.submit("button[value=approve]");
    assert_eq!(b.heading(), "Device approved", "{}", b.text());
    assert!(b.text().contains("You can return to your device"));
    b.screenshot("approved-phone");

    // The device's next poll gets tokens.
    let tokens = s.exchange(&client_id, &started.device_code);

    // My devices shows it, trusted.
    b.goto(&s.url("/devices"));
    assert_eq!(b.heading(), "My devices");
    let page = b.text();
    assert!(
        page.contains("<b>Kitchen</b> <script>alert(1)</script>"),
        "{page}"
    );
    assert!(page.contains("Yes (longer lifetime)"), "{page}");
    assert!(page.contains("active"), "{page}");
    b.screenshot("devices-before-remove-phone");

    // The refresh token works until the device is removed here, then fails at once.
    let r = s.refresh(&client_id, &tokens.refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    let refresh = r.body["refresh_token"].as_str().unwrap().to_string();
    // Remove asks first (issue 21): the real button shows only after the first click.
    assert!(!b.visible("details.confirm button.danger"));
    b.click("details.confirm summary");
    assert!(b.visible("details.confirm button.danger"));
    assert!(
        b.text().contains("It is signed out at once"),
        "{}",
        b.text()
    );
    b.submit("details.confirm button.danger");
    assert!(b.text().contains("removed"), "{}", b.text());
    assert!(b.text().contains("No device is signed in"), "{}", b.text());
    let r = s.refresh(&client_id, &refresh);
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(r.body["error"], "invalid_grant");
}

#[test]
fn deny_from_the_complete_uri_and_the_guessing_limit() {
    let s = server();
    s.add_user("bob", false);
    let (client_id, _) = s.add_client("Build agent", "", &[]);
    let started = s.start_device(&client_id, "", "ci-runner-7");

    let b = Browser::start();
    // The verification_uri_complete fills the code in: after sign-in, straight to the question.
    b.goto(&s.url(&format!("/device?user_code={}", started.user_code)));
    b.sign_in("bob");
    assert_eq!(b.heading(), "Approve this device?", "{}", b.text());
    assert!(b.text().contains("ci-runner-7"));
    assert!(b.text().contains("no extra permissions"), "{}", b.text());
    b.submit("button[value=deny]");
    assert_eq!(b.heading(), "Device denied", "{}", b.text());
    let r = s.poll(&client_id, &started.device_code);
    assert_eq!(r.body["error"], "access_denied", "{}", r.text);

    // The used code now says so, plainly.
    b.goto(&s.url(&format!("/device?user_code={}", started.user_code)));
    assert!(b.text().contains("This code was denied"), "{}", b.text());

    // Guessing: a few wrong codes, then the page says how long to wait.
    let mut limited = false;
    for guess in [
        "BBBB-BBBB",
        "CCCC-CCCC",
        "DDDD-DDDD",
        "FFFF-FFFF",
        "GGGG-GGGG",
        "HHHH-HHHH",
    ] {
        b.goto(&s.url("/device"));
        b.fill("#user_code", guess);
        b.submit("main button[type=submit]");
        if b.heading() == "Too many attempts" {
            limited = true;
            break;
        }
        assert!(b.text().contains("This code is not valid"), "{}", b.text());
    }
    assert!(limited, "never limited");
    assert!(b.text().contains("seconds"), "{}", b.text());
    // The same layout as every page (issue 21): styled, with the navigation.
    assert_styled(&b);
    assert!(b.visible("header nav a[href='/devices']"));
    b.screenshot("too-many-attempts-phone");
}

/// Starts a device authorization as if from `ip` behind the trusted proxy, with its facts and
/// where the proxy says it is.
#[allow(clippy::too_many_arguments)]
fn device_from(
    s: &Server,
    client_id: &str,
    name: &str,
    os: &str,
    hostname: &str,
    ip: &str,
    (city, region, country): (&str, &str, &str),
) -> harness::Started {
    let body = format!(
        "client_id={client_id}&device_name={}&os={}&hostname={}",
        enc(name),
        enc(os),
        enc(hostname)
    );
    let r = s.raw(
        "POST",
        "/oauth/device_authorization",
        &[
            ("content-type", "application/x-www-form-urlencoded"),
            ("x-forwarded-for", ip),
            ("x-geo-city", city),
            ("x-geo-region", region),
            ("x-geo-country", country),
        ],
        Some(body.into_bytes()),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    harness::Started {
        device_code: r.body["device_code"].as_str().unwrap().into(),
        user_code: r.body["user_code"].as_str().unwrap().into(),
    }
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A server behind a trusted proxy (the tests' loopback address) that believes its location
/// headers, so devices can ask "from" other networks and places.
fn proxied_server() -> Server {
    Server::start_with(&[
        ("HALLPASS_OAUTH_POLL_INTERVAL", "1s"),
        ("HALLPASS_SERVER_TRUSTED_PROXIES", "127.0.0.1/32"),
        ("HALLPASS_LOCATION_CITY_HEADER", "X-Geo-City"),
        ("HALLPASS_LOCATION_REGION_HEADER", "X-Geo-Region"),
        ("HALLPASS_LOCATION_COUNTRY_HEADER", "X-Geo-Country"),
    ])
}

/// Asserts that the page's style sheet applied: the notice has its thick left border.
#[track_caller]
fn assert_styled(b: &Browser) {
    let border = b.js("const n = document.querySelector('.notice'); \
         return n ? parseFloat(getComputedStyle(n).borderLeftWidth) : 0;");
    assert!(
        border.as_f64().unwrap() > 4.0,
        "the style sheet did not apply: {border}"
    );
    assert!(b.visible("header nav"), "the navigation");
}

#[test]
fn the_admin_page_reads_well_on_a_phone_and_a_desktop_and_deny_asks_first() {
    let s = proxied_server();
    s.add_user("root", true);
    s.add_user("alice", false);
    let (tv, _) = s.add_client("Living room apps", "read", &[]);
    let (ci, _) = s.add_client("Build agents", "read", &[]);
    let nl = ("Utrecht", "Utrecht", "Netherlands");
    let de = ("Frankfurt am Main", "Hesse", "Germany");
    let is = ("Reykjavik", "Capital Region", "Iceland");
    device_from(
        &s,
        &tv,
        "Living room TV",
        "Android TV 12",
        "tv.lan",
        "203.0.113.7",
        nl,
    );
    let agent = device_from(
        &s,
        &ci,
        "build-agent-07",
        "Debian 12",
        "ci-7.example.internal",
        "198.51.100.23",
        de,
    );
    let speaker = device_from(
        &s,
        &tv,
        "Kitchen speaker",
        "SpeakerOS 4.2",
        "speaker.lan",
        "203.0.113.7",
        nl,
    );
    s.approve(&speaker.user_code, "alice", false);
    device_from(
        &s,
        &tv,
        "Alice's laptop",
        "macOS 15.1",
        "alice-mbp.local",
        "192.0.2.14",
        is,
    );
    device_from(
        &s,
        &ci,
        "build-agent-12",
        "Debian 12",
        "ci-12.example.internal",
        "198.51.100.24",
        de,
    );

    let b = Browser::start();
    b.goto(&s.url("/admin/authorizations"));
    assert!(
        b.text()
            .contains("Sign in to see the device authorizations."),
        "{}",
        b.text()
    );
    b.sign_in("root");
    assert_eq!(b.heading(), "Device authorizations");

    // A phone: one card per authorization, nothing broken inside a word, nothing too wide.
    b.resize(390, 900);
    let problems = b.layout_problems();
    assert!(problems.is_empty(), "at 390 px:\n{}", problems.join("\n"));
    assert_eq!(
        b.js("return getComputedStyle(document.querySelector('table.list tbody tr')).display"),
        "block",
        "cards on a phone"
    );
    let page = b.text();
    for fact in [
        "build-agent-07",
        "Debian 12",
        "198.51.100.23",
        "Frankfurt am Main, Hesse, Germany",
        "Build agents",
        "alice",
        "Live (5)",
        "Approved, not yet exchanged (1)",
    ] {
        assert!(page.contains(fact), "{fact} on the admin page:\n{page}");
    }
    b.screenshot_page("admin-phone", 390);

    // A desktop: a table across the width, still nothing broken.
    b.resize(1280, 900);
    let problems = b.layout_problems();
    assert!(problems.is_empty(), "at 1280 px:\n{}", problems.join("\n"));
    assert_eq!(
        b.js("return getComputedStyle(document.querySelector('table.list tbody tr')).display"),
        "table-row"
    );
    let width = b
        .js("return document.querySelector('table.list').getBoundingClientRect().width")
        .as_f64()
        .unwrap();
    assert!(width > 1000.0, "the table uses the width: {width} px");
    b.screenshot_page("admin-desktop", 1280);

    // Deny asks first: the real button shows only after "Deny…", with the code it denies.
    b.resize(390, 900);
    let row = format!("//tr[.//code[text()='{}']]", agent.user_code);
    assert!(!b.visible("details.confirm[open]"));
    b.click_xpath(&format!("{row}//summary"));
    assert!(b.visible("details.confirm[open] button.danger"));
    assert!(b
        .text()
        .contains(&format!("Deny code {}?", agent.user_code)));
    let problems = b.layout_problems();
    assert!(
        problems.is_empty(),
        "with the question open:\n{}",
        problems.join("\n")
    );
    b.js("document.querySelector('details.confirm[open]').scrollIntoView({block: 'center'})");
    b.screenshot("admin-deny-phone");
    b.submit_at(
        Locator::XPath(&format!("{row}//button[@type='submit']")),
        "Deny code",
    );
    // Post/redirect/get: the list again, saying what happened; reloading sends nothing again.
    assert_eq!(b.path(), "/admin/authorizations?done=denied");
    assert!(
        b.text().contains("The authorization was denied."),
        "{}",
        b.text()
    );
    b.reload();
    assert_eq!(b.heading(), "Device authorizations");
    assert!(!b.text().contains("no longer pending"), "{}", b.text());
    assert!(b.text().contains("Denied (1)"));
    let r = s.poll(&ci, &agent.device_code);
    assert_eq!(r.body["error"], "access_denied", "{}", r.text);
}

#[test]
fn a_device_on_another_network_approve_reload_and_back() {
    let s = proxied_server();
    s.add_user("alice", false);
    let (client_id, _) = s.add_client("Living room TV", "read", &[]);
    let started = device_from(
        &s,
        &client_id,
        "Living room TV",
        "Android TV 12",
        "tv.lan",
        "203.0.113.7",
        ("Utrecht", "Utrecht", "Netherlands"),
    );

    let b = Browser::start();
    b.goto(&s.url(&format!("/device?user_code={}", started.user_code)));
    // The sign-in page says why.
    assert!(
        b.text()
            .contains(&format!("Sign in to approve device {}.", started.user_code)),
        "{}",
        b.text()
    );
    b.sign_in("alice");
    assert_eq!(b.heading(), "Approve this device?", "{}", b.text());
    // The browser comes from 127.0.0.1, the device from 203.0.113.7: said plainly.
    assert!(b.visible(".notice.warn"));
    let page = b.text();
    for shown in [
        "This device asked from a different network than the one you are using.",
        "It asked from 203.0.113.7; you are at 127.0.0.1.",
        "deny it",
        "Utrecht, Utrecht, Netherlands",
    ] {
        assert!(page.contains(shown), "{shown:?} on:\n{page}");
    }
    b.screenshot_page("confirm-phone", 390);
    b.screenshot_page("confirm-desktop", 1280);
    b.resize(390, 1000);

    b.click("input[name=trusted]");
    b.submit("button[value=approve]");
    let approved = b.path();
    assert!(
        approved.starts_with("/device/approved?device="),
        "{approved}"
    );
    assert_eq!(b.heading(), "Device approved");
    // Reload: the same page, nothing posted again (no "already used").
    b.reload();
    assert_eq!(b.path(), approved);
    assert_eq!(b.heading(), "Device approved");
    assert!(!b.text().contains("already been used"));
    // Away and Back: the result page again, not Chrome's ERR_CACHE_MISS of a re-sent form.
    b.goto(&s.url("/devices"));
    b.back();
    assert_eq!(b.path(), approved);
    assert_eq!(b.heading(), "Device approved", "{}", b.text());
    // Back once more: the confirmation's address. Approving there again (Chrome may show the
    // page it kept) or reloading it says calmly that this person approved it already.
    b.back();
    assert!(b.path().starts_with("/device?user_code="), "{}", b.path());
    if b.heading() == "Approve this device?" {
        b.submit("button[value=approve]");
        assert!(
            b.text().contains("You approved it yourself"),
            "{}",
            b.text()
        );
        b.back();
    }
    b.reload();
    assert!(
        b.text().contains("You approved it yourself"),
        "{}",
        b.text()
    );
    assert_styled(&b);

    // My devices, then the styled 404 of an unknown address.
    s.exchange(&client_id, &started.device_code);
    b.goto(&s.url("/devices"));
    assert!(b.text().contains("Living room TV"));
    assert!(b.text().contains("in 30 days"), "{}", b.text());
    b.screenshot_page("devices-phone", 390);
    b.screenshot_page("devices-desktop", 1280);
    b.resize(390, 1000);
    b.goto(&s.url("/no/such/page"));
    assert_eq!(b.heading(), "Not found");
    assert!(b.text().contains("There is no such page."));
    assert_styled(&b);
    assert!(
        b.visible("header nav a[href='/devices']"),
        "signed-in navigation"
    );
    b.screenshot("not-found-phone");
}
