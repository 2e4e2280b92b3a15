//! Durations that would overflow, or are written twice, are refused by `hallpass check` and by
//! `serve`, from the file and from the environment, naming the key and its range (issue 18 §7).

use std::process::{Command, Output};

use crate::harness::BIN;

/// `hallpass --config F check` with `toml` as the file and `env` added.
fn check(toml: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, toml).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.args(["--config", path.to_str().unwrap(), "check"]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// Exit code 2 and a message that contains every one of `words`.
fn refused(out: &Output, words: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    for w in words {
        assert!(err.contains(w), "{w:?} missing from: {err}");
    }
}

#[test]
fn overflowing_lifetimes_are_refused_with_the_keys_range() {
    for (section, key, max) in [
        ("oauth", "device_code_lifetime", "1d"),
        ("oauth", "access_token_lifetime", "1d"),
        ("oauth", "refresh_token_lifetime", "3650d"),
        ("sessions", "lifetime", "365d"),
        ("devices", "trusted_lifetime", "3650d"),
    ] {
        let name = format!("{section}.{key}");
        let out = check(&format!("[{section}]\n{key} = \"999999999999d\"\n"), &[]);
        refused(&out, &[&name, "out of range", &format!("to {max}")]);
        let var = format!("HALLPASS_{}_{}", section.to_uppercase(), key.to_uppercase());
        let out = check("", &[(&var, "999999999999d")]);
        refused(&out, &[&var, &name, &format!("to {max}")]);
        // The largest value of the range is fine.
        let out = check(&format!("[{section}]\n{key} = \"{max}\"\n"), &[]);
        assert!(out.status.success(), "{name} = {max}: {out:?}");
    }
    // Too short is out of range too.
    let out = check("[sessions]\nlifetime = \"0s\"\n", &[]);
    refused(&out, &["sessions.lifetime", "from 1s to 365d"]);
    // `serve` refuses it the same way, before binding anything.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:0\"\n[oauth]\naccess_token_lifetime = \"999999999999d\"\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .args(["--config", path.to_str().unwrap(), "--db"])
        .arg(dir.path().join("h.db"))
        .arg("serve")
        .output()
        .unwrap();
    refused(&out, &["oauth.access_token_lifetime", "out of range"]);
    assert!(!dir.path().join("h.db").exists(), "no database created");
}

#[test]
fn a_unit_written_twice_is_refused() {
    for text in ["5s5s", "30m1h", "1h1h30m"] {
        let out = check(&format!("[oauth]\npoll_interval = \"{text}\"\n"), &[]);
        refused(&out, &["oauth.poll_interval", "at most once"]);
        let out = check("", &[("HALLPASS_SESSIONS_LIFETIME", text)]);
        refused(&out, &["HALLPASS_SESSIONS_LIFETIME", "at most once"]);
    }
    let out = check("[oauth]\npoll_interval = \"1m30s\"\n", &[]);
    assert!(out.status.success(), "{out:?}");
}
