//! RFC 9068 completely (issue 19 §3): access tokens signed with RS256, ES256 or EdDSA as each
//! client chooses, verified by jsonwebtoken from the JWKS (kid lookup), with `typ`, `iss` and
//! an `aud` that is always present; one key per algorithm, made once, rotated together;
//! operators' PEM keys imported; RFC 8707 resource indicators deciding `aud`; and RFC 7662
//! introspection of a refresh token without an access token's `token_type`.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use jsonwebtoken::jwk::ThumbprintHash;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use super::harness::{jwt_part, tokens, Resp, Server, World};
use super::{assert_oauth_error, introspection, jwks, kid, refreshed};

/// The JWS algorithm named by a header or a JWK.
fn algorithm(name: &str) -> Algorithm {
    match name {
        "RS256" => Algorithm::RS256,
        "ES256" => Algorithm::ES256,
        "EdDSA" => Algorithm::EdDSA,
        other => panic!("unexpected alg {other:?}"),
    }
}

/// Verifies `token` as a resource server would, with jsonwebtoken: the key found by `kid` in
/// the JWKS, the algorithm that key is published for, `typ: at+jwt`, the issuer, expiry, and
/// `aud` containing `audience`. Returns the header's `alg` and the claims.
fn verified(s: &Server, token: &str, audience: &str) -> Result<(String, Value), String> {
    let header = jsonwebtoken::decode_header(token).map_err(|e| format!("header: {e}"))?;
    if header.typ.as_deref() != Some("at+jwt") {
        return Err(format!("typ {:?}", header.typ));
    }
    let kid = header.kid.ok_or("no kid")?;
    let set = jwks(s);
    let jwk = set
        .find(&kid)
        .ok_or_else(|| format!("kid {kid} not in the JWKS"))?;
    let published = jwk
        .common
        .key_algorithm
        .ok_or("the JWK names no alg")?
        .to_string();
    let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("JWK: {e}"))?;
    let mut validation = Validation::new(algorithm(&published));
    validation.set_issuer(&[s.base.as_str()]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
    validation.leeway = 0;
    let claims = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .map_err(|e| format!("verification: {e}"))?
        .claims;
    Ok((published, claims))
}

/// The JSON a command prints.
fn cli_json(s: &Server, args: &[&str]) -> Value {
    serde_json::from_str(&s.cli_ok(args, None)).expect("JSON output")
}

/// Runs a command that must fail with exit code 1; returns its stderr.
fn cli_fails(s: &Server, args: &[&str]) -> String {
    let out = s.cli(args, None);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(1), "hallpass {args:?}: {err}");
    err
}

/// `keys list`, grouped: algorithm → kids (newest first).
fn keys_by_algorithm(s: &Server) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for k in cli_json(s, &["keys", "list"]).as_array().unwrap() {
        out.entry(k["algorithm"].as_str().unwrap().to_string())
            .or_default()
            .push(k["kid"].as_str().unwrap().to_string());
    }
    out
}

/// `grant_type=client_credentials` naming `resources`.
fn client_credentials(s: &Server, id: &str, secret: &str, resources: &[&str]) -> Resp {
    let mut form = vec![
        ("grant_type", "client_credentials"),
        ("client_id", id),
        ("client_secret", secret),
    ];
    form.extend(resources.iter().map(|r| ("resource", *r)));
    s.form("/oauth/token", &form)
}

fn access(r: &Resp) -> String {
    assert_eq!(r.status, 200, "{}", r.text);
    r.body["access_token"]
        .as_str()
        .expect("access_token")
        .to_string()
}

#[test]
fn each_client_gets_its_algorithm_verified_with_jsonwebtoken_from_the_jwks() {
    let w = World::new(); // oauth.signing_algorithm = EdDSA (the harness's file)
    let (_, alice) = w.user("alice");

    // A client made on the command line with RS256, one through the admin API with ES256.
    let rs = cli_json(
        &w,
        &[
            "client",
            "add",
            "--name",
            "rsa",
            "--scope",
            "devices",
            "--signing-alg",
            "RS256",
        ],
    );
    let rs = rs["client_id"].as_str().unwrap().to_string();
    let r = w.post(
        "/api/v1/admin/oauth/clients",
        &w.root.access,
        Some(json!({ "name": "ec", "allowed_scopes": ["devices"], "signing_algorithm": "ES256" })),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["signing_algorithm"], "ES256");
    assert_eq!(r.body["audience"], Value::Null);
    assert_eq!(r.body["allowed_resources"], json!([]));
    let ec = r.body["client_id"].as_str().unwrap().to_string();

    let by_rs = w.login(&rs, "alice", "devices");
    let by_ec = w.login(&ec, "alice", "devices");
    for (token, alg) in [
        (&by_rs.access, "RS256"),
        (&by_ec.access, "ES256"),
        (&alice.access, "EdDSA"),
    ] {
        let header = jwt_part(token, 0);
        assert_eq!(header["alg"], alg);
        assert_eq!(header["typ"], "at+jwt");
        // The default audience with nothing configured: the issuer.
        let (published, claims) = verified(&w, token, &w.base).expect(alg);
        assert_eq!(published, alg);
        assert_eq!(claims["aud"], w.base.as_str());
        assert_eq!(claims["iss"], w.base.as_str());
        // A token never verifies under another algorithm.
        for other in ["RS256", "ES256", "EdDSA"]
            .into_iter()
            .filter(|o| *o != alg)
        {
            let jwk = jwks(&w);
            let key = DecodingKey::from_jwk(jwk.find(&kid(token)).unwrap()).unwrap();
            let mut v = Validation::new(algorithm(other));
            v.validate_aud = false;
            assert!(
                jsonwebtoken::decode::<Value>(token, &key, &v).is_err(),
                "{alg} as {other}"
            );
        }
        assert!(w.active(token));
    }

    // One key per algorithm; the RSA JWK carries n and e, and every kid is the RFC 7638
    // thumbprint jsonwebtoken computes.
    let set = jwks(&w);
    assert_eq!(set.keys.len(), 3);
    for jwk in &set.keys {
        assert_eq!(
            jwk.thumbprint(ThumbprintHash::SHA256),
            jwk.common.key_id.clone().unwrap()
        );
    }
    let raw: Value = reqwest::blocking::get(w.url("/oauth/jwks"))
        .unwrap()
        .json()
        .unwrap();
    let rsa = raw["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kty"] == "RSA")
        .expect("an RSA JWK");
    assert_eq!(rsa["alg"], "RS256");
    assert_eq!(rsa["use"], "sig");
    assert_eq!(rsa["e"], "AQAB");
    assert_eq!(rsa["n"].as_str().unwrap().len(), 342, "a 2048-bit modulus");
    let listed = keys_by_algorithm(&w);
    assert_eq!(
        listed
            .iter()
            .map(|(a, k)| (a.as_str(), k.len()))
            .collect::<Vec<_>>(),
        [("ES256", 1), ("EdDSA", 1), ("RS256", 1)]
    );

    // The admin API changes a client's algorithm; its next refresh follows, with the one RSA
    // key; null goes back to the server's default.
    let path = format!("/api/v1/admin/oauth/clients/{ec}");
    let r = w.patch(
        &path,
        &w.root.access,
        json!({ "signing_algorithm": "RS256" }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["signing_algorithm"], "RS256");
    let t = refreshed(&w, &ec, &by_ec.refresh);
    assert_eq!(jwt_part(&t.access, 0)["alg"], "RS256");
    assert_eq!(kid(&t.access), kid(&by_rs.access));
    let r = w.patch(&path, &w.root.access, json!({ "signing_algorithm": null }));
    assert_eq!(r.body["signing_algorithm"], Value::Null);
    let t = refreshed(&w, &ec, &t.refresh);
    assert_eq!(verified(&w, &t.access, &w.base).unwrap().0, "EdDSA");
    let r = w.patch(
        &path,
        &w.root.access,
        json!({ "signing_algorithm": "HS256" }),
    );
    super::harness::assert_bad_field(&r, "signing_algorithm");

    // And the command line: `client update --signing-alg`, `default` to follow the server.
    let out = cli_json(&w, &["client", "update", &ec, "--signing-alg", "ES256"]);
    assert_eq!(out["signing_algorithm"], "ES256");
    let t = refreshed(&w, &ec, &t.refresh);
    assert_eq!(verified(&w, &t.access, &w.base).unwrap().0, "ES256");
    assert_eq!(
        kid(&t.access),
        kid(&by_ec.access),
        "the ES256 key made earlier"
    );
    let out = cli_json(&w, &["client", "update", &ec, "--signing-alg", "default"]);
    assert_eq!(out["signing_algorithm"], Value::Null);
    let listed = cli_json(&w, &["client", "list"]);
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["client_id"] == rs.as_str())
        .unwrap();
    assert_eq!(row["signing_algorithm"], "RS256");
    let out = w.cli(
        &["client", "add", "--name", "x", "--signing-alg", "HS256"],
        None,
    );
    assert_eq!(out.status.code(), Some(2), "a usage error");

    // Tokens of every earlier algorithm still verify: their keys stay published.
    for token in [&by_rs.access, &by_ec.access, &alice.access] {
        verified(&w, token, &w.base).expect("an earlier token");
    }
}

/// With nothing configured tokens are RS256 (RFC 9068 §2.1's one required algorithm, and the
/// one every verifier takes) and carry an `aud`: the issuer.
#[test]
fn the_default_is_rs256_and_aud_is_always_present() {
    let w = World::with_default_algorithm(&[]);
    let (alg, claims) = verified(&w, &w.root.access, &w.base).expect("root's token");
    assert_eq!(alg, "RS256");
    assert_eq!(claims["aud"], w.base.as_str());
    let cc = access(&w.client_credentials(&w.svc, &w.svc_secret, "extra"));
    let (alg, claims) = verified(&w, &cc, &w.base).expect("client_credentials");
    assert_eq!((alg.as_str(), &claims["sub"]), ("RS256", &json!(w.svc)));
    assert_eq!(keys_by_algorithm(&w).len(), 1, "one key: RS256's");
    let i = introspection(&w, &w.svc, &w.svc_secret, &cc);
    assert_eq!(i["aud"], w.base.as_str());
    // A configured audience replaces the issuer.
    let aud = "https://api.example.com";
    let s = Server::start_with_default_algorithm(&[("HALLPASS_OAUTH_AUDIENCE", aud)]);
    let (svc, secret) = s.add_client(
        "svc",
        "read",
        &["--confidential", "--grant", "client_credentials"],
    );
    let token = access(&s.client_credentials(&svc, &secret.unwrap(), "read"));
    assert_eq!(verified(&s, &token, aud).unwrap().1["aud"], aud);
}

/// The first tokens of an algorithm with no key yet, asked for at once, make one key: the
/// others wait for it instead of each generating (and storing) their own.
#[test]
fn the_first_tokens_of_an_algorithm_share_one_new_key() {
    let w = World::new();
    let (id, secret) = w.add_client(
        "rsa-service",
        "extra",
        &[
            "--confidential",
            "--grant",
            "client_credentials",
            "--signing-alg",
            "RS256",
        ],
    );
    let secret = secret.unwrap();
    assert!(!keys_by_algorithm(&w).contains_key("RS256"));
    let n = 8;
    let barrier = Arc::new(Barrier::new(n));
    let base = w.base.clone();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (barrier, id, secret, base) =
                (barrier.clone(), id.clone(), secret.clone(), base.clone());
            std::thread::spawn(move || {
                let http = reqwest::blocking::Client::builder()
                    .timeout(Duration::from_secs(60))
                    .build()
                    .unwrap();
                barrier.wait();
                let r = http
                    .post(format!("{base}/oauth/token"))
                    .form(&[
                        ("grant_type", "client_credentials"),
                        ("client_id", id.as_str()),
                        ("client_secret", secret.as_str()),
                    ])
                    .send()
                    .unwrap();
                assert_eq!(r.status(), 200);
                let body: Value = r.json().unwrap();
                body["access_token"].as_str().unwrap().to_string()
            })
        })
        .collect();
    let tokens: Vec<String> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let kids: std::collections::BTreeSet<String> = tokens.iter().map(|t| kid(t)).collect();
    assert_eq!(kids.len(), 1, "{kids:?}");
    assert_eq!(keys_by_algorithm(&w)["RS256"].len(), 1);
    for t in &tokens {
        assert_eq!(verified(&w, t, &w.base).unwrap().0, "RS256");
    }
}

#[test]
fn keys_rotate_takes_every_algorithm_in_use_or_one() {
    let w = World::new();
    let (_, alice) = w.user("alice");
    let (ec, _) = w.add_client("ec", "devices", &["--signing-alg", "ES256"]);
    let by_ec = w.login(&ec, "alice", "devices");
    let before = keys_by_algorithm(&w);
    assert_eq!(before.keys().collect::<Vec<_>>(), ["ES256", "EdDSA"]);

    // One algorithm.
    let out = cli_json(&w, &["keys", "rotate", "--alg", "ES256"]);
    assert_eq!(out["algorithm"], "ES256");
    assert_eq!(out["rotated"].as_array().unwrap().len(), 1);
    let after = keys_by_algorithm(&w);
    assert_eq!(after["ES256"].len(), 2);
    assert_eq!(after["EdDSA"], before["EdDSA"]);

    // Every algorithm in use, the default's first; no key for an algorithm nobody uses.
    let out = cli_json(&w, &["keys", "rotate"]);
    let rotated: Vec<&str> = out["rotated"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["algorithm"].as_str().unwrap())
        .collect();
    assert_eq!(rotated, ["EdDSA", "ES256"]);
    assert_eq!(out["algorithm"], "EdDSA");
    let after = keys_by_algorithm(&w);
    assert_eq!((after["ES256"].len(), after["EdDSA"].len()), (3, 2));
    assert!(!after.contains_key("RS256"));

    // The API: one algorithm by `algorithm`, which may be one not in use yet.
    let r = w.post(
        "/api/v1/admin/keys/rotate?algorithm=RS256",
        &w.root.access,
        None,
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["rotated"],
        json!([{ "kid": r.body["kid"], "algorithm": "RS256" }])
    );
    let r = w.post(
        "/api/v1/admin/keys/rotate?algorithm=HS256",
        &w.root.access,
        None,
    );
    super::harness::assert_bad_field(&r, "algorithm");
    let out = w.cli(&["keys", "rotate", "--alg", "none"], None);
    assert_eq!(out.status.code(), Some(2));

    // Old tokens verify with their retired keys; new ones (the server re-reads active keys
    // within a second) are signed by the new keys.
    verified(&w, &alice.access, &w.base).expect("EdDSA token after rotation");
    verified(&w, &by_ec.access, &w.base).expect("ES256 token after rotation");
    std::thread::sleep(Duration::from_millis(1100));
    let a = refreshed(&w, &w.cli, &alice.refresh);
    let e = refreshed(&w, &ec, &by_ec.refresh);
    let now = keys_by_algorithm(&w);
    assert_eq!(kid(&a.access), now["EdDSA"][0]);
    assert_eq!(kid(&e.access), now["ES256"][0]);
}

/// A private key in PEM, and its public key (SubjectPublicKeyInfo DER), made by OpenSSL when it
/// is installed (the realistic case: PKCS#8 v1 Ed25519, SEC1 with EC PARAMETERS first, ...),
/// else by the crates hallpass uses, in the same formats (and no public key: the JWKS only).
struct Pem {
    private: String,
    public: Option<Vec<u8>>,
}

fn openssl(dir: &Path, args: &[&str]) -> Option<String> {
    openssl_bytes(dir, args).map(|b| String::from_utf8(b).unwrap())
}

fn openssl_bytes(dir: &Path, args: &[&str]) -> Option<Vec<u8>> {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .ok()?;
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(out.stdout)
}

/// `kind`: rsa-pkcs8, rsa-pkcs1, ec-sec1, ec-pkcs8, ed25519.
fn make_key(dir: &Path, kind: &str) -> Pem {
    let genpkey = |alg: &[&str]| -> Option<String> {
        let mut args = vec!["genpkey"];
        args.extend_from_slice(alg);
        openssl(dir, &args)
    };
    let by_openssl = match kind {
        "rsa-pkcs8" => genpkey(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]),
        "rsa-pkcs1" => {
            genpkey(&["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]).map(|k| {
                std::fs::write(dir.join("k8.pem"), k).unwrap();
                openssl(dir, &["pkey", "-in", "k8.pem", "-traditional"]).unwrap()
            })
        }
        "ec-sec1" => openssl(dir, &["ecparam", "-name", "prime256v1", "-genkey"]),
        "ec-pkcs8" => genpkey(&["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]),
        "ed25519" => genpkey(&["-algorithm", "ED25519"]),
        other => panic!("{other}"),
    };
    if let Some(private) = by_openssl {
        std::fs::write(dir.join("key.pem"), &private).unwrap();
        let public = openssl_bytes(
            dir,
            &["pkey", "-in", "key.pem", "-pubout", "-outform", "DER"],
        );
        return Pem { private, public };
    }
    eprintln!("openssl not found: {kind} made by the rsa crate and ring");
    use hallpass::protocol::jwt::{Algorithm as Alg, SigningKey};
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::{DecodePrivateKey, LineEnding};
    let pem = |label: &str, der: &[u8]| {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    };
    let private = match kind {
        "rsa-pkcs8" => pem("PRIVATE KEY", &SigningKey::generate(Alg::RS256).1),
        "rsa-pkcs1" => {
            let der = SigningKey::generate(Alg::RS256).1;
            let key = rsa::RsaPrivateKey::from_pkcs8_der(&der).unwrap();
            key.to_pkcs1_pem(LineEnding::LF).unwrap().to_string()
        }
        "ec-sec1" => {
            let der = SigningKey::generate(Alg::ES256).1;
            let info = rsa::pkcs8::PrivateKeyInfo::try_from(der.as_slice()).unwrap();
            pem("EC PRIVATE KEY", info.private_key)
        }
        "ec-pkcs8" => pem("PRIVATE KEY", &SigningKey::generate(Alg::ES256).1),
        _ => pem("PRIVATE KEY", &SigningKey::generate(Alg::EdDSA).1),
    };
    Pem {
        private,
        public: None,
    }
}

/// Verifies `token` with the operator's own public key (SubjectPublicKeyInfo DER from
/// OpenSSL, not the JWKS).
fn verified_by_operator_key(token: &str, alg: &str, spki: &[u8]) {
    let info = rsa::pkcs8::spki::SubjectPublicKeyInfoRef::try_from(spki).unwrap();
    // The bit string holds what jsonwebtoken's DER keys take: PKCS#1 for RSA, the point for
    // P-256, the 32 bytes for Ed25519.
    let raw = info.subject_public_key.raw_bytes();
    let key = match alg {
        "RS256" => DecodingKey::from_rsa_der(raw),
        "ES256" => DecodingKey::from_ec_der(raw),
        _ => DecodingKey::from_ed_der(raw),
    };
    let mut v = Validation::new(algorithm(alg));
    v.validate_aud = false;
    jsonwebtoken::decode::<Value>(token, &key, &v).expect("verifies with the operator's key");
}

#[test]
fn keys_import_takes_pem_keys_of_every_algorithm() {
    let w = World::new();
    let dir = tempfile::tempdir().unwrap();
    let (_, alice) = w.user("alice");
    let mut refresh: BTreeMap<&str, (String, String)> = BTreeMap::new();
    for (alg, flag) in [("RS256", "RS256"), ("ES256", "ES256"), ("EdDSA", "EdDSA")] {
        let (id, _) = w.add_client(alg, "devices", &["--signing-alg", flag]);
        let t = w.login(&id, "alice", "devices");
        refresh.insert(alg, (id, t.refresh));
    }
    for (kind, alg) in [
        ("rsa-pkcs8", "RS256"),
        ("rsa-pkcs1", "RS256"),
        ("ec-sec1", "ES256"),
        ("ec-pkcs8", "ES256"),
        ("ed25519", "EdDSA"),
    ] {
        let pem = make_key(dir.path(), kind);
        let file = dir.path().join(format!("{kind}.pem"));
        std::fs::write(&file, &pem.private).unwrap();
        let before = keys_by_algorithm(&w)[alg][0].clone();
        let out = cli_json(&w, &["keys", "import", file.to_str().unwrap()]);
        assert_eq!(out["algorithm"], alg, "{kind}");
        assert_eq!(out["state"], "active");
        assert_eq!(
            out["retired"],
            before.as_str(),
            "{kind}: the key it replaced"
        );
        let new_kid = out["kid"].as_str().unwrap().to_string();
        assert_eq!(keys_by_algorithm(&w)[alg][0], new_kid);
        // The next token of that algorithm is signed by the imported key: it verifies from
        // the JWKS and with the operator's own public key.
        let (id, old) = refresh[alg].clone();
        let t = refreshed(&w, &id, &old);
        refresh.insert(alg, (id, t.refresh.clone()));
        assert_eq!(kid(&t.access), new_kid, "{kind}");
        assert_eq!(verified(&w, &t.access, &w.base).unwrap().0, alg);
        if let Some(public) = &pem.public {
            verified_by_operator_key(&t.access, alg, public);
        }
        // The same key again is refused.
        let err = cli_fails(&w, &["keys", "import", file.to_str().unwrap()]);
        assert!(err.contains("already stored"), "{err}");
    }

    // On standby: published, not signing, until activated.
    let pem = make_key(dir.path(), "ed25519");
    let file = dir.path().join("standby.pem");
    std::fs::write(&file, &pem.private).unwrap();
    let signing = keys_by_algorithm(&w)["EdDSA"][0].clone();
    let out = cli_json(&w, &["keys", "import", "--standby", file.to_str().unwrap()]);
    assert_eq!(out["state"], "standby");
    let standby = out["kid"].as_str().unwrap().to_string();
    assert!(jwks(&w).find(&standby).is_some(), "published on standby");
    let t = refreshed(&w, &w.cli, &alice.refresh);
    assert_eq!(kid(&t.access), signing, "standby keys do not sign");
    let out = cli_json(&w, &["keys", "activate", "--", &standby]);
    assert_eq!(out["retired"], signing.as_str());
    let t = refreshed(&w, &w.cli, &t.refresh);
    assert_eq!(kid(&t.access), standby);
    let err = cli_fails(&w, &["keys", "activate", "--", &standby]);
    assert!(err.contains("already active"), "{err}");
    let err = cli_fails(&w, &["keys", "activate", "--", &signing]);
    assert!(err.contains("retired"), "{err}");

    // What cannot be a signing key is refused, with the reason.
    let bad = [
        ("garbage", "no private key found".to_string()),
        (
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMAA=\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "encrypted".into(),
        ),
        (
            "-----BEGIN PUBLIC KEY-----\nMAA=\n-----END PUBLIC KEY-----\n",
            "no private key found".into(),
        ),
    ];
    for (text, reason) in bad {
        std::fs::write(dir.path().join("bad.pem"), text).unwrap();
        let bad = dir.path().join("bad.pem");
        let err = cli_fails(&w, &["keys", "import", bad.to_str().unwrap()]);
        assert!(err.contains(&reason), "{err}");
    }
    let small = openssl(
        dir.path(),
        &[
            "genpkey",
            "-algorithm",
            "RSA",
            "-pkeyopt",
            "rsa_keygen_bits:1024",
        ],
    );
    if let Some(small) = small {
        std::fs::write(dir.path().join("small.pem"), small).unwrap();
        let f = dir.path().join("small.pem");
        let err = cli_fails(&w, &["keys", "import", f.to_str().unwrap()]);
        assert!(err.contains("1024 bits"), "{err}");
    }
    let err = cli_fails(&w, &["keys", "import", "/nonexistent/key.pem"]);
    assert!(err.contains("/nonexistent/key.pem"), "{err}");
}

/// RFC 8707 resource indicators: named at the device authorization they are the grant's, every
/// access token's `aud`; a token request narrows them for one token; anything else is
/// `invalid_target`, which consumes nothing.
#[test]
fn resource_indicators_decide_the_audience() {
    const A: &str = "https://a.example/api";
    const B: &str = "https://b.example";
    const X: &str = "https://default.example";
    let w = World::new();
    w.add_user("alice", false);
    let r = w.post(
        "/api/v1/admin/oauth/clients",
        &w.root.access,
        Some(json!({
            "name": "api", "allowed_scopes": ["devices"],
            "audience": X, "allowed_resources": [A, B, A],
        })),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        r.body["allowed_resources"],
        json!([A, B]),
        "repeats dropped"
    );
    let api = r.body["client_id"].as_str().unwrap().to_string();
    let authorize = |resources: &[&str]| -> Resp {
        let mut form = vec![("client_id", api.as_str()), ("scope", "devices")];
        form.extend(resources.iter().map(|r| ("resource", *r)));
        w.form("/oauth/device_authorization", &form)
    };
    let poll = |code: &str, resources: &[&str]| -> Resp {
        let mut form = vec![
            ("grant_type", super::harness::DEVICE_GRANT),
            ("device_code", code),
            ("client_id", api.as_str()),
        ];
        form.extend(resources.iter().map(|r| ("resource", *r)));
        w.form("/oauth/token", &form)
    };
    let refresh = |token: &str, resources: &[&str]| -> Resp {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", token),
            ("client_id", api.as_str()),
        ];
        form.extend(resources.iter().map(|r| ("resource", *r)));
        w.form("/oauth/token", &form)
    };
    let aud = |token: &str| jwt_part(token, 1)["aud"].clone();

    // A grant for A and B: the token is for both, an array; a resource server of either
    // accepts it, one of neither refuses it.
    let r = authorize(&[A, B]);
    assert_eq!(r.status, 200, "{}", r.text);
    let code = r.body["device_code"].as_str().unwrap().to_string();
    w.approve(r.body["user_code"].as_str().unwrap(), "alice", false);
    let t = tokens(&poll(&code, &[]).body);
    assert_eq!(aud(&t.access), json!([A, B]));
    verified(&w, &t.access, A).expect("for A");
    verified(&w, &t.access, B).expect("for B");
    assert!(verified(&w, &t.access, X).is_err());
    let i = introspection(&w, &w.svc, &w.svc_secret, &t.access);
    assert_eq!(i["aud"], json!([A, B]));

    // A refresh narrows one token to B; the next, naming nothing, is for both again.
    let r = refresh(&t.refresh, &[B]);
    let narrowed = tokens(&r.body);
    assert_eq!(aud(&narrowed.access), json!(B), "{}", r.text);
    assert_eq!(
        introspection(&w, &w.svc, &w.svc_secret, &narrowed.access)["aud"],
        B
    );
    // Not the grant's (though the client's default): invalid_target, and the refresh token
    // is not used up.
    let r = refresh(&narrowed.refresh, &[X]);
    assert_oauth_error(&r, 400, "invalid_target");
    let r = refresh(&narrowed.refresh, &[]);
    let again = tokens(&r.body);
    assert_eq!(aud(&again.access), json!([A, B]), "{}", r.text);

    // Malformed or not allowed at the device authorization: invalid_target.
    for bad in [
        vec!["https://c.example"],
        vec!["relative/path"],
        vec!["https://a.example/api#frag"],
        vec![A, "https://c.example"],
    ] {
        let r = authorize(&bad);
        assert_oauth_error(&r, 400, "invalid_target");
    }

    // A grant naming nothing: the client's default audience; a token request may name any
    // resource the client may have, and a wrong one consumes nothing.
    let r = authorize(&[]);
    let code = r.body["device_code"].as_str().unwrap().to_string();
    w.approve(r.body["user_code"].as_str().unwrap(), "alice", false);
    assert_oauth_error(&poll(&code, &["https://c.example"]), 400, "invalid_target");
    assert_oauth_error(&poll(&code, &["not a uri"]), 400, "invalid_target");
    let r = poll(&code, &[A]);
    let t2 = tokens(&r.body);
    assert_eq!(aud(&t2.access), json!(A), "{}", r.text);
    let r = refresh(&t2.refresh, &[]);
    let t2 = tokens(&r.body);
    assert_eq!(aud(&t2.access), json!(X), "the default: {}", r.text);

    // client_credentials: the resource named, if the client may have it, else its default.
    let svc_path = format!("/api/v1/admin/oauth/clients/{}", w.svc);
    let r = w.patch(
        &svc_path,
        &w.root.access,
        json!({ "allowed_resources": [A] }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let cc = access(&client_credentials(&w, &w.svc, &w.svc_secret, &[A]));
    assert_eq!(aud(&cc), json!(A));
    let r = client_credentials(&w, &w.svc, &w.svc_secret, &[B]);
    assert_oauth_error(&r, 400, "invalid_target");
    let cc = access(&client_credentials(&w, &w.svc, &w.svc_secret, &[]));
    assert_eq!(aud(&cc), json!(w.base), "svc has no audience: the issuer");

    // RFC 9728 §4: the metadata lists the resources tokens may be for.
    let meta: Value = reqwest::blocking::get(w.url("/.well-known/oauth-authorization-server"))
        .unwrap()
        .json()
        .unwrap();
    let listed = meta["protected_resources"].as_array().unwrap();
    for r in [A, B, X, w.base.as_str()] {
        assert!(listed.contains(&json!(r)), "{r} in {meta}");
    }

    // Taking B from the client narrows the A+B grant to A at its next refresh; taking both
    // ends it with invalid_target.
    let path = format!("/api/v1/admin/oauth/clients/{api}");
    let r = w.patch(&path, &w.root.access, json!({ "allowed_resources": [A] }));
    assert_eq!(r.status, 200, "{}", r.text);
    let r = refresh(&again.refresh, &[]);
    let t3 = tokens(&r.body);
    assert_eq!(aud(&t3.access), json!(A), "{}", r.text);
    let r = w.patch(&path, &w.root.access, json!({ "allowed_resources": [] }));
    assert_eq!(r.status, 200, "{}", r.text);
    assert_oauth_error(&refresh(&t3.refresh, &[]), 400, "invalid_target");

    // The admin API refuses malformed resources and audiences, naming the field.
    for (body, field) in [
        (
            json!({ "allowed_resources": ["no-scheme"] }),
            "allowed_resources",
        ),
        (
            json!({ "allowed_resources": ["https://a#b"] }),
            "allowed_resources",
        ),
        (json!({ "audience": "has space" }), "audience"),
        (json!({ "audience": "" }), "audience"),
    ] {
        let r = w.patch(&path, &w.root.access, body);
        super::harness::assert_bad_field(&r, field);
    }
    // The command line too.
    let err = cli_fails(&w, &["client", "add", "--name", "n", "--resource", "nope"]);
    assert!(err.contains("absolute URI"), "{err}");
    let out = cli_json(
        &w,
        &[
            "client",
            "update",
            &api,
            "--audience",
            "my-api",
            "--resource",
            A,
        ],
    );
    assert_eq!(
        (&out["audience"], &out["allowed_resources"]),
        (&json!("my-api"), &json!([A]))
    );
    let out = cli_json(
        &w,
        &["client", "update", &api, "--no-audience", "--no-resources"],
    );
    assert_eq!(
        (&out["audience"], &out["allowed_resources"]),
        (&Value::Null, &json!([]))
    );
}

/// RFC 7662 §2.2: `token_type` is the "Type of the token as defined in Section 5.1 of OAuth
/// 2.0", the access token's type. A refresh token has none: the member is left out (it was
/// "refresh_token", a token type *hint* of RFC 7009, not a token type).
#[test]
fn introspecting_a_refresh_token_gives_no_access_token_type() {
    let w = World::new();
    let (_, a) = w.user("alice");
    let i = introspection(&w, &w.svc, &w.svc_secret, &a.refresh);
    assert_eq!(i["active"], true, "{i}");
    assert!(i.get("token_type").is_none(), "{i}");
    assert_eq!(i["client_id"], w.cli.as_str());
    let i = introspection(&w, &w.svc, &w.svc_secret, &a.access);
    assert_eq!(i["token_type"], "Bearer");
}
