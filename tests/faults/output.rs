//! Standard output and error closed under the server and the command line (issue 18): a log
//! line or a message that cannot be written is dropped, never a panic. Before, tracing's report
//! of a failed write was an `eprintln!` that panicked, so with stderr closed no request was
//! answered, and with stdout closed `serve` exited at its `listening on` line.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::BIN;
use crate::{assert_oauth_error, serial, Http, Node};

/// `hallpass_log_write_errors_total` from `/metrics`.
fn dropped_log_lines(http: &Http, node: &Node) -> u64 {
    let m = http.get(node, "/metrics").expect("/metrics answers");
    assert_eq!(m.status, 200, "{}", m.text);
    m.text
        .lines()
        .find_map(|l| l.strip_prefix("hallpass_log_write_errors_total "))
        .unwrap_or_else(|| panic!("no hallpass_log_write_errors_total in:\n{}", m.text))
        .parse()
        .expect("a count")
}

/// The server's stderr a pipe nobody reads any more: every request of a whole device flow is
/// answered, and the log lines it could not write are counted.
#[test]
fn closed_stderr_every_request_is_answered_and_dropped_log_lines_are_counted() {
    let _serial = serial();
    let mut node = Node::start(&[]);
    node.add_user("alice");
    let client = node.add_client("closed-stderr", "read");
    node.stop();
    node.close_stderr = true;
    node.restart();
    let http = Http::new(Duration::from_secs(10));

    let h = http.get(&node, "/healthz").expect("/healthz answered");
    assert_eq!(h.status, 200, "{}", h.text);
    assert_eq!(h.body["status"], "ok", "{}", h.text);
    let started = http
        .start(&node, &client, "read")
        .expect("device authorization answered");
    assert_eq!(started.status, 200, "{}", started.text);
    let device_code = started.body["device_code"].as_str().unwrap();
    let user_code = started.body["user_code"].as_str().unwrap();
    let pending = http
        .poll(&node, &client, device_code)
        .expect("token poll answered");
    assert_oauth_error(&pending, &[400], &["authorization_pending"]);
    node.cli_approve(user_code, "alice").expect("approved");
    let issued = http
        .poll(&node, &client, device_code)
        .expect("token poll answered");
    assert_eq!(issued.status, 200, "{}", issued.text);
    assert!(issued.body["access_token"].is_string(), "{}", issued.text);

    // One request line each (info is the default level), and the `serving` line.
    let dropped = dropped_log_lines(&http, &node);
    assert!(dropped >= 5, "{dropped} dropped log lines counted");
    node.alive().expect("the server is still running");
}

/// `serve` with stdout closed: the `listening on` line is lost, the server serves all the same
/// (its address is in the log's `serving` line).
#[test]
fn closed_stdout_the_server_still_serves() {
    let _serial = serial();
    let node = Node::create(&[], None);
    let log = std::fs::File::create(node.log_path()).unwrap();
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(&node.config)
        .arg("serve")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn hallpass serve");
    drop(child.stdout.take());
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Kill(child);

    let deadline = Instant::now() + Duration::from_secs(15);
    let addr = loop {
        let log = std::fs::File::open(node.log_path()).unwrap();
        let found = BufReader::new(log)
            .lines()
            .map_while(Result::ok)
            .filter(|l| l.contains("serving"))
            .find_map(|l| {
                let rest = l.split("addr=").nth(1)?;
                Some(rest.split_whitespace().next()?.to_string())
            });
        if let Some(addr) = found {
            break addr;
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!("the server exited ({status}); log:\n{}", node.log());
        }
        assert!(
            Instant::now() < deadline,
            "no `serving` line; log:\n{}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let http = Http::new(Duration::from_secs(10));
    let base = format!("http://{addr}");
    let h = http
        .get(base.as_str(), "/healthz")
        .expect("/healthz answered");
    assert_eq!(h.status, 200, "{}", h.text);
    assert!(
        node.log()
            .contains("could not write the `listening on` line"),
        "the lost line is logged:\n{}",
        node.log()
    );
    assert!(child.0.try_wait().unwrap().is_none(), "still running");
}

/// What a command prints, or fails with, going nowhere: a clean exit code that says what
/// happened (1, as for any failed command), never a panic (101).
#[test]
fn closed_stdout_or_stderr_fails_a_command_cleanly() {
    let _serial = serial();
    let mut node = Node::start(&[]);
    node.add_user("alice");
    node.stop();
    // Runs `hallpass ARGS` with stdout or stderr closed; returns the exit code and whatever
    // went to the other stream.
    let run = |args: &[&str], close_stdout: bool| {
        let mut cmd = Command::new(BIN);
        cmd.arg("--config")
            .arg(&node.config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &node.env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn hallpass");
        let mut text = String::new();
        if close_stdout {
            drop(child.stdout.take());
            std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut text).unwrap();
        } else {
            drop(child.stderr.take());
            std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut text).unwrap();
        }
        (child.wait().unwrap().code(), text)
    };

    // The command did its work; its output could not be written: exit 1, and it says so.
    // (`hallpass backup` copies the SQLite file; on PostgreSQL it points to pg_dump.)
    if !crate::harness::on_postgres() {
        let backup = node.dir.path().join("copy.db");
        let (code, stderr) = run(&["backup", backup.to_str().unwrap()], true);
        assert_eq!(code, Some(1), "backup with stdout closed: {stderr}");
        assert!(
            stderr.contains("output could not be written"),
            "backup with stdout closed: {stderr}"
        );
        assert!(backup.exists(), "the backup itself was written");
    }
    let (code, stderr) = run(&["client", "list"], true);
    assert_eq!(code, Some(1), "client list with stdout closed: {stderr}");
    // A failed command with nowhere to say why: its exit code still tells.
    let (code, stdout) = run(&["device", "deny", "BCDF-GHJK"], false);
    assert_eq!(
        code,
        Some(1),
        "deny of an unknown code, stderr closed: {stdout}"
    );
    let (code, stdout) = run(&["--listen", "not-an-address", "check"], false);
    assert_eq!(
        code,
        Some(2),
        "a configuration error, stderr closed: {stdout}"
    );
}
