//! Signing keys sealed at rest (issue 18 §1): with `keys.sealing_secrets_file` set, a copy of
//! the database or of a backup alone yields no key that signs a token the server accepts; old
//! keys are sealed (and a rotated secret taken over) by `hallpass keys reseal`; a server with a
//! wrong or missing secret refuses to start, naming the key, and creates no key; and
//! `hallpass check` says when no secret is set.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde_json::Value;

use crate::harness::{jwt_part, on_postgres, PASSWORD};
use crate::{serial, Http, Node};

const SECRET_A: &str = "first-sealing-secret-of-more-than-thirty-two-characters";
const SECRET_B: &str = "second-sealing-secret-of-more-than-thirty-two-characters";

const SECRETS_VAR: &str = "HALLPASS_KEYS_SEALING_SECRETS_FILE";

/// Writes `lines` as the node's sealing secrets file (mode 0600) and points the server and the
/// command line at it.
fn set_secrets(node: &mut Node, lines: &[&str]) {
    let path = node.dir.path().join("sealing-secrets");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    node.env.retain(|(k, _)| k != SECRETS_VAR);
    node.env
        .push((SECRETS_VAR.into(), path.to_str().unwrap().into()));
}

/// No sealing secret configured from now on.
fn clear_secrets(node: &mut Node) {
    node.env.retain(|(k, _)| k != SECRETS_VAR);
}

/// A stored key: (kid, algorithm, private_key, public_key).
type StoredKey = (String, String, Vec<u8>, Vec<u8>);

/// Every row of `signing_keys` of the node's database, read straight from it as a thief would.
fn stored_keys(node: &Node) -> Vec<StoredKey> {
    keys_in(&node.db_path(), node.pg())
}

/// Every row of `signing_keys` of the SQLite file `db`, or of `pg`.
fn keys_in(db: &Path, pg: Option<&crate::pg::TestDb>) -> Vec<StoredKey> {
    let text = |v: &Value| v.as_str().expect("text").to_string();
    let bytes = |v: &Value| -> Vec<u8> {
        let b = v.as_array().expect("a blob").iter();
        b.map(|x| x.as_u64().expect("a byte") as u8).collect()
    };
    crate::harness::query(
        db,
        pg,
        "SELECT kid, algorithm, private_key, public_key FROM signing_keys ORDER BY created",
        &[],
    )
    .iter()
    .map(|r| (text(&r[0]), text(&r[1]), bytes(&r[2]), bytes(&r[3])))
    .collect()
}

/// `genuine`'s claims signed again with `private_key` as a PKCS#8 document, under `kid`: what
/// anyone who can read the database file could do with a plain key. `None` if the bytes are
/// no private key of any of the three algorithms.
fn forge(genuine: &str, kid: &str, private_key: &[u8]) -> Option<String> {
    use ring::signature::{
        EcdsaKeyPair, Ed25519KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
    };
    let mut claims: Value =
        serde_json::from_slice(&B64.decode(genuine.split('.').nth(1)?).ok()?).ok()?;
    claims["jti"] = "forged".into();
    let sign = |alg: &str, sign: &dyn Fn(&[u8]) -> Vec<u8>| {
        let header = serde_json::json!({ "alg": alg, "typ": "at+jwt", "kid": kid });
        let input = format!(
            "{}.{}",
            B64.encode(header.to_string()),
            B64.encode(claims.to_string())
        );
        let sig = sign(input.as_bytes());
        format!("{input}.{}", B64.encode(sig))
    };
    if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(private_key) {
        return Some(sign("EdDSA", &|m| pair.sign(m).as_ref().to_vec()));
    }
    let rng = ring::rand::SystemRandom::new();
    if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, private_key, &rng)
    {
        return Some(sign("ES256", &|m| {
            pair.sign(&rng, m).unwrap().as_ref().to_vec()
        }));
    }
    if let Ok(pair) = RsaKeyPair::from_pkcs8(private_key) {
        return Some(sign("RS256", &|m| {
            let mut sig = vec![0; pair.public().modulus_len()];
            pair.sign(&RSA_PKCS1_SHA256, &rng, m, &mut sig).unwrap();
            sig
        }));
    }
    None
}

/// A server with admin `root`, a client allowed `admin`, and root's admin access token.
fn admin_token(node: &Node, http: &Http) -> (String, String) {
    let out = node.cli(
        &["user", "add", "root", "--admin", "--password-stdin"],
        Some(&format!("{PASSWORD}\n")),
    );
    assert!(out.status.success(), "{out:?}");
    let client = node.add_client("admin-cli", "admin");
    let token = node.login(http, &client, "root", "admin");
    (client, token)
}

/// `GET /api/v1/admin/users` with `token`: the status.
fn admin_call(node: &Node, http: &Http, token: &str) -> u16 {
    http.api(node, "GET", "/api/v1/admin/users", token, None)
        .expect("answers")
        .status
}

fn json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON on stdout")
}

/// The stored private key is no PKCS#8 document and holds neither the key's public half nor
/// anything that parses as a private key.
fn assert_sealed(kid: &str, private_key: &[u8], public_key: &[u8]) {
    assert_ne!(
        private_key.first(),
        Some(&0x30),
        "key {kid} is stored as a DER document"
    );
    assert!(
        !private_key
            .windows(public_key.len())
            .any(|w| w == public_key),
        "key {kid}'s stored value holds its public key: not sealed"
    );
}

/// The finding reproduced without a secret (a key read from the file signs an admin token the
/// server accepts), then the same theft with a secret set: neither the database nor a backup
/// holds a row whose bytes sign anything.
#[test]
fn with_a_sealing_secret_a_stolen_database_or_backup_signs_no_token() {
    let _serial = serial();
    let http = Http::new(Duration::from_secs(15));

    // Without a secret: the key in the file is a plain PKCS#8 document.
    let plain = Node::start(&[]);
    let (_, token) = admin_token(&plain, &http);
    assert_eq!(admin_call(&plain, &http, &token), 200);
    let keys = stored_keys(&plain);
    let (kid, _, private_key, _) = &keys[0];
    let forged = forge(&token, kid, private_key).expect("a plain key parses");
    assert_eq!(
        admin_call(&plain, &http, &forged),
        200,
        "control: a key read from an unsealed database signs an admin token"
    );
    drop(plain);

    // With a secret.
    let mut node = Node::create(&[], None);
    set_secrets(&mut node, &[SECRET_A]);
    node.restart();
    let (client, token) = admin_token(&node, &http);
    assert_eq!(admin_call(&node, &http, &token), 200);
    // A rotation through the API too, so the file holds a retired key and an active one; the
    // server opens the new key when it next signs (its key cache lasts 1 s).
    let r = http
        .api(&node, "POST", "/api/v1/admin/keys/rotate", &token, None)
        .unwrap();
    assert_eq!(r.status, 201, "{}", r.text);
    std::thread::sleep(Duration::from_millis(1100));
    let token2 = node.login(&http, &client, "root", "admin");
    assert_eq!(
        jwt_part(&token2, 0)["kid"],
        r.body["kid"],
        "signed with the new key"
    );
    assert_eq!(admin_call(&node, &http, &token2), 200);

    let mut copies = vec![(node.db_path(), node.pg())];
    if !on_postgres() {
        // `hallpass backup` copies SQLite files (on PostgreSQL it points to pg_dump).
        let backup = node.dir.path().join("stolen-backup.db");
        let out = node.cli(&["backup", backup.to_str().unwrap()], None);
        assert!(out.status.success(), "{out:?}");
        copies.push((backup, None));
    }
    for (file, pg) in copies {
        let keys = keys_in(&file, pg);
        assert_eq!(keys.len(), 2, "{}", file.display());
        for (kid, _, private_key, public_key) in &keys {
            assert_sealed(kid, private_key, public_key);
            for genuine in [&token, &token2] {
                assert!(
                    forge(genuine, kid, private_key).is_none(),
                    "key {kid} from {} parses as a private key",
                    file.display()
                );
            }
        }
    }
    // The server still signs and verifies with its sealed keys, after a restart too.
    node.stop();
    node.restart();
    assert_eq!(admin_call(&node, &http, &token2), 200);
    let token3 = node.login(&http, &client, "root", "admin");
    assert_eq!(admin_call(&node, &http, &token3), 200);
    let listed = json(&node.cli(&["keys", "list"], None));
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["sealed"] == true),
        "{listed}"
    );
}

/// Keys stored before a secret was set are sealed by `keys reseal`; a new secret on the first
/// line takes over after another reseal, and the old one can then go.
#[test]
fn keys_reseal_seals_old_keys_and_moves_them_to_a_new_secret() {
    let _serial = serial();
    let http = Http::new(Duration::from_secs(15));
    let mut node = Node::start(&[]);
    let (client, token) = admin_token(&node, &http);
    let (kid, _, before, _) = stored_keys(&node).remove(0);
    assert_eq!(before.first(), Some(&0x30), "plain PKCS#8 without a secret");
    node.stop();

    // A secret configured: the plain key still works, the server says to reseal.
    set_secrets(&mut node, &[SECRET_A]);
    node.restart();
    assert_eq!(admin_call(&node, &http, &token), 200);
    assert!(node.log().contains("keys reseal"), "{}", node.log());
    let done = json(&node.cli(&["keys", "reseal"], None));
    assert_eq!(done["resealed"], serde_json::json!([kid]), "{done}");
    assert_eq!(done["unchanged"], serde_json::json!([]), "{done}");
    let (_, _, sealed_a, public) = stored_keys(&node).remove(0);
    assert_sealed(&kid, &sealed_a, &public);
    // The running server goes on signing and verifying; resealing again changes nothing.
    assert_eq!(admin_call(&node, &http, &token), 200);
    let fresh = node.login(&http, &client, "root", "admin");
    assert_eq!(admin_call(&node, &http, &fresh), 200);
    let again = json(&node.cli(&["keys", "reseal"], None));
    assert_eq!(again["unchanged"], serde_json::json!([kid]), "{again}");
    assert_eq!(stored_keys(&node)[0].2, sealed_a);

    // Rotating the secret: B first, A kept to open; reseal; then A removed.
    node.stop();
    set_secrets(&mut node, &[SECRET_B, SECRET_A]);
    node.restart();
    let done = json(&node.cli(&["keys", "reseal"], None));
    assert_eq!(done["resealed"], serde_json::json!([kid]), "{done}");
    let sealed_b = stored_keys(&node).remove(0).2;
    assert_ne!(sealed_b, sealed_a);
    node.stop();
    set_secrets(&mut node, &[SECRET_B]);
    node.restart();
    assert_eq!(admin_call(&node, &http, &token), 200);
    let fresh = node.login(&http, &client, "root", "admin");
    assert_eq!(admin_call(&node, &http, &fresh), 200);
    // A rotation seals the new key with B as well.
    json(&node.cli(&["keys", "rotate"], None));
    let listed = json(&node.cli(&["keys", "list"], None));
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .all(|k| k["sealed"] == true),
        "{listed}"
    );
    node.stop();
    // Only the old secret now: refused.
    set_secrets(&mut node, &[SECRET_A]);
    let out = node.serve_refused();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// With sealed keys stored, a server with another secret, or none, stops at start-up naming
/// the key, and neither it nor the command line adds a key sealed otherwise.
#[test]
fn a_wrong_or_missing_sealing_secret_is_refused_and_creates_no_key() {
    let _serial = serial();
    let http = Http::new(Duration::from_secs(15));
    let mut node = Node::create(&[], None);
    set_secrets(&mut node, &[SECRET_A]);
    node.restart();
    let (client, token) = admin_token(&node, &http);
    node.stop();
    let before = stored_keys(&node);
    let kid = before[0].0.clone();

    for wrong in [Some(SECRET_B), None] {
        match wrong {
            Some(s) => set_secrets(&mut node, &[s]),
            None => clear_secrets(&mut node),
        }
        let out = node.serve_refused();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(stderr.contains(&kid), "the message names the key: {stderr}");
        assert!(stderr.contains("seal"), "{stderr}");
        for args in [&["keys", "rotate"][..], &["keys", "reseal"][..]] {
            let out = node.cli(args, None);
            assert!(!out.status.success(), "{args:?} with {wrong:?}: {out:?}");
        }
        assert_eq!(stored_keys(&node), before, "no key added or changed");
    }

    set_secrets(&mut node, &[SECRET_A]);
    node.restart();
    assert_eq!(admin_call(&node, &http, &token), 200);
    let fresh = node.login(&http, &client, "root", "admin");
    assert_eq!(admin_call(&node, &http, &fresh), 200);
}

/// `hallpass check` says when no sealing secret is set (exit 0), and refuses an unusable
/// secrets file (exit 2).
#[test]
fn check_says_when_no_sealing_secret_is_set() {
    let _serial = serial();
    let mut node = Node::create(&[], None);
    let out = node.cli(&["check"], None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("no sealing secret"),
        "{stderr}"
    );

    set_secrets(&mut node, &[SECRET_A, SECRET_B]);
    let out = node.cli(&["check"], None);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("no sealing secret"), "{stderr}");
    assert!(stdout.contains("sealed"), "{stdout}");
    assert!(
        !stdout.contains(SECRET_A) && !stderr.contains(SECRET_A),
        "a secret was printed"
    );

    for bad in [&["short"][..], &["# only a comment"][..]] {
        set_secrets(&mut node, bad);
        let out = node.cli(&["check"], None);
        assert_eq!(out.status.code(), Some(2), "{bad:?}: {out:?}");
    }
    let missing = node.dir.path().join("no-such-file");
    node.env.retain(|(k, _)| k != SECRETS_VAR);
    node.env
        .push((SECRETS_VAR.into(), missing.to_str().unwrap().into()));
    let out = node.cli(&["check"], None);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}
