//! Reads an operator's PEM private key for `hallpass keys import`: PKCS#8 (`PRIVATE KEY`, what
//! `openssl genpkey` writes) of an RSA, P-256 or Ed25519 key, and the older PKCS#1
//! (`RSA PRIVATE KEY`) and SEC1 (`EC PRIVATE KEY`) forms, converted to the PKCS#8 document
//! that [`SigningKey`] parses and `signing_keys` stores. The key is then checked by parsing it
//! with ring and signing with it. No I/O: the caller reads the file.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use rsa::pkcs1::DecodeRsaPrivateKey;
use rsa::pkcs8::der::asn1::ObjectIdentifier;
use rsa::pkcs8::der::{Decode, Encode};
use rsa::pkcs8::{AlgorithmIdentifierRef, DecodePrivateKey, EncodePrivateKey, PrivateKeyInfo};
use rsa::traits::PublicKeyParts;

use super::jwt::{verify, AccessClaims, Algorithm, Audience, SigningKey};

const RSA_ENCRYPTION: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
const EC_PUBLIC_KEY: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
const P256: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");

/// A key read from PEM, checked, with the PKCS#8 document to store.
pub struct Imported {
    /// The parsed key (its kid is the RFC 7638 thumbprint).
    pub key: SigningKey,
    /// The PKCS#8 document.
    pub pkcs8: Vec<u8>,
}

/// The first PEM block whose label is a private key's: (label, DER). Text around the blocks
/// (and other blocks, such as the `EC PARAMETERS` that `openssl ecparam -genkey` writes first)
/// is skipped.
fn private_block(text: &str) -> Result<(String, Vec<u8>), String> {
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        let Some(label) = line
            .strip_prefix("-----BEGIN ")
            .and_then(|l| l.strip_suffix("-----"))
        else {
            continue;
        };
        if !label.ends_with("PRIVATE KEY") {
            continue;
        }
        let end = format!("-----END {label}-----");
        let mut body = String::new();
        let mut ended = false;
        for line in lines.by_ref() {
            if line == end {
                ended = true;
                break;
            }
            // RFC 1421 headers mark the legacy OpenSSL encryption of PKCS#1 and SEC1 keys.
            if line.contains(':') {
                return Err(format!(
                    "the {label} is encrypted; decrypt it first, e.g. \
                     `openssl pkey -in KEY -out PLAIN.pem`"
                ));
            }
            body.push_str(line);
        }
        if !ended {
            return Err(format!("the {label} block has no `{end}` line"));
        }
        let der = B64
            .decode(body)
            .map_err(|e| format!("the {label} block is not base64: {e}"))?;
        return Ok((label.to_string(), der));
    }
    Err(
        "no private key found: expected a PEM block `-----BEGIN PRIVATE KEY-----` \
         (PKCS#8), `RSA PRIVATE KEY` (PKCS#1) or `EC PRIVATE KEY` (SEC1)"
            .into(),
    )
}

/// An RSA key, re-encoded as the PKCS#8 v1 document ring reads, within ring's sizes.
fn rsa_pkcs8(key: rsa::RsaPrivateKey) -> Result<(Algorithm, Vec<u8>), String> {
    let bits = key.n().bits();
    if !(2048..=4096).contains(&bits) {
        return Err(format!(
            "the RSA key has {bits} bits; RS256 needs 2048 to 4096 (RFC 7518 §3.3 sets the floor)"
        ));
    }
    let doc = key
        .to_pkcs8_der()
        .map_err(|e| format!("cannot encode the RSA key: {e}"))?;
    Ok((Algorithm::RS256, doc.as_bytes().to_vec()))
}

/// The algorithm and PKCS#8 document of a private key in PEM.
fn pkcs8_of(text: &str) -> Result<(Algorithm, Vec<u8>), String> {
    let (label, der) = private_block(text)?;
    match label.as_str() {
        "PRIVATE KEY" => {
            let info = PrivateKeyInfo::from_der(&der)
                .map_err(|e| format!("not a PKCS#8 private key: {e}"))?;
            match info.algorithm.oid {
                RSA_ENCRYPTION => rsa_pkcs8(
                    rsa::RsaPrivateKey::from_pkcs8_der(&der)
                        .map_err(|e| format!("bad RSA key: {e}"))?,
                ),
                EC_PUBLIC_KEY => {
                    let curve = info
                        .algorithm
                        .parameters_oid()
                        .map_err(|_| "an EC key without a named curve".to_string())?;
                    if curve != P256 {
                        return Err(format!(
                            "the EC key is on curve {curve}; ES256 needs P-256 (1.2.840.10045.3.1.7)"
                        ));
                    }
                    Ok((Algorithm::ES256, der))
                }
                ED25519 => Ok((Algorithm::EdDSA, der)),
                other => Err(format!(
                    "unsupported key algorithm {other}: hallpass signs with RSA (RS256), \
                     P-256 (ES256) or Ed25519 (EdDSA)"
                )),
            }
        }
        "RSA PRIVATE KEY" => rsa_pkcs8(
            rsa::RsaPrivateKey::from_pkcs1_der(&der)
                .map_err(|e| format!("not a PKCS#1 RSA private key: {e}"))?,
        ),
        "EC PRIVATE KEY" => {
            // SEC1 (RFC 5915) inside PKCS#8 (RFC 5208), with the curve named in the algorithm
            // identifier; ring checks the key's own parameters and public key against it.
            let info = PrivateKeyInfo {
                algorithm: AlgorithmIdentifierRef {
                    oid: EC_PUBLIC_KEY,
                    parameters: Some((&P256).into()),
                },
                private_key: &der,
                public_key: None,
            };
            let doc = info
                .to_der()
                .map_err(|e| format!("cannot wrap the EC key: {e}"))?;
            Ok((Algorithm::ES256, doc))
        }
        "ENCRYPTED PRIVATE KEY" => Err(
            "the PKCS#8 key is encrypted; decrypt it first, e.g. \
             `openssl pkcs8 -in KEY -out PLAIN.pem`"
                .into(),
        ),
        other => Err(format!(
            "unsupported PEM block `{other}`: expected PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY"
        )),
    }
}

/// Reads and checks a PEM private key: it must parse as a key of a supported algorithm and
/// sign a token that verifies with its public key.
pub fn import(text: &str) -> Result<Imported, String> {
    let (algorithm, pkcs8) = pkcs8_of(text)?;
    let key = SigningKey::from_pkcs8(algorithm, &pkcs8)
        .map_err(|e| format!("{e} (ring refused the {} key)", algorithm.as_str()))?;
    let probe = AccessClaims {
        iss: "hallpass keys import".into(),
        sub: "probe".into(),
        aud: Audience::one("probe"),
        client_id: "probe".into(),
        scope: String::new(),
        iat: 0,
        exp: 0,
        jti: "probe".into(),
        device_id: None,
    };
    if verify(&key.sign(&probe), &[key.public()]).is_none() {
        return Err("the key signs, but its own public key does not verify it".into());
    }
    Ok(Imported { key, pkcs8 })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rsa::pkcs1::EncodeRsaPrivateKey;
    use rsa::pkcs8::LineEnding;

    fn pem(label: &str, der: &[u8]) -> String {
        let body = B64.encode(der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN {label}-----\n{}\n-----END {label}-----\n",
            lines.join("\n")
        )
    }

    #[test]
    fn every_generated_key_reads_back_with_its_kid() {
        for alg in Algorithm::ALL {
            let (key, pkcs8) = SigningKey::generate(alg);
            let got = import(&pem("PRIVATE KEY", &pkcs8)).unwrap();
            assert_eq!(got.key.algorithm, alg);
            assert_eq!(got.key.kid, key.kid, "{alg:?}");
        }
    }

    #[test]
    fn pkcs1_rsa_keys_are_converted() {
        let (key, pkcs8) = SigningKey::generate(Algorithm::RS256);
        let rsa = rsa::RsaPrivateKey::from_pkcs8_der(&pkcs8).unwrap();
        let text = rsa.to_pkcs1_pem(LineEnding::LF).unwrap();
        let got = import(&format!("a comment before\n{}", &*text)).unwrap();
        assert_eq!(got.key.algorithm, Algorithm::RS256);
        assert_eq!(got.key.kid, key.kid);
    }

    #[test]
    fn sec1_ec_keys_are_wrapped() {
        let (key, pkcs8) = SigningKey::generate(Algorithm::ES256);
        let info = PrivateKeyInfo::from_der(&pkcs8).unwrap();
        let sec1 = info.private_key;
        let params =
            "-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n";
        let got = import(&format!("{params}{}", pem("EC PRIVATE KEY", sec1))).unwrap();
        assert_eq!(got.key.algorithm, Algorithm::ES256);
        assert_eq!(got.key.kid, key.kid);
    }

    #[test]
    fn what_cannot_sign_is_refused_with_a_reason() {
        let refused = |text: &str, needle: &str| {
            let e = import(text).err().expect("refused");
            assert!(e.contains(needle), "{e:?} should mention {needle:?}");
        };
        refused("", "no private key found");
        refused(
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
            "no private key found",
        );
        refused(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
            "encrypted",
        );
        refused(
            "-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n\nAAAA\n-----END RSA PRIVATE KEY-----\n",
            "encrypted",
        );
        refused(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n",
            "no `-----END PRIVATE KEY-----`",
        );
        refused(&pem("PRIVATE KEY", b"\x30\x03\x02\x01\x00"), "not a PKCS#8");
        // A 1024-bit RSA key: too small for RS256.
        let small = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
        let text = small.to_pkcs8_pem(LineEnding::LF).unwrap();
        refused(&text, "1024 bits");
        // An EC key on another curve (secp384r1), inside PKCS#8.
        let p384 = ObjectIdentifier::new_unwrap("1.3.132.0.34");
        let info = PrivateKeyInfo {
            algorithm: AlgorithmIdentifierRef {
                oid: EC_PUBLIC_KEY,
                parameters: Some((&p384).into()),
            },
            private_key: &[0x30, 0x00],
            public_key: None,
        };
        refused(&pem("PRIVATE KEY", &info.to_der().unwrap()), "P-256");
        // Ed448.
        let info = PrivateKeyInfo {
            algorithm: AlgorithmIdentifierRef {
                oid: ObjectIdentifier::new_unwrap("1.3.101.113"),
                parameters: None,
            },
            private_key: &[0x04, 0x00],
            public_key: None,
        };
        refused(
            &pem("PRIVATE KEY", &info.to_der().unwrap()),
            "unsupported key algorithm",
        );
        // A P-256 SEC1 key whose bytes are damaged: ring refuses it.
        let (_, pkcs8) = SigningKey::generate(Algorithm::ES256);
        let mut sec1 = PrivateKeyInfo::from_der(&pkcs8)
            .unwrap()
            .private_key
            .to_vec();
        let last = sec1.len() - 1;
        sec1[last] ^= 1;
        refused(&pem("EC PRIVATE KEY", &sec1), "ring refused");
    }
}
