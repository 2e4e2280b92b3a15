//! The approval pages in a real browser (issue 3): Debian's Chromium driven through ChromeDriver
//! over WebDriver (fantoccini), against the real binary. `.ci/run` installs both.
//!
//! A device asks for a code; the browser signs in, types the code in lower case without the
//! dash, approves with "trust this device"; the device's next poll gets tokens; /devices shows
//! it trusted; removing it there kills its refresh token. Another run opens the complete URI and
//! denies. Screenshots of the pages go to `$CARGO_TARGET_TMPDIR/screenshots/`.

#[allow(dead_code)]
#[path = "../api/harness.rs"]
mod harness;

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
        self.rt.block_on(async {
            let old = self.c().find(Locator::Css("html")).await.unwrap();
            self.c()
                .find(Locator::Css(css))
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
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
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
    b.screenshot("confirm-phone");
    b.resize(1280, 900);
    b.screenshot("confirm-desktop");
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
    b.screenshot("devices-phone");

    // The refresh token works until the device is removed here, then fails at once.
    let r = s.refresh(&client_id, &tokens.refresh);
    assert_eq!(r.status, 200, "{}", r.text);
    let refresh = r.body["refresh_token"].as_str().unwrap().to_string();
    b.submit("button.danger");
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
    b.screenshot("too-many-attempts-phone");
}
