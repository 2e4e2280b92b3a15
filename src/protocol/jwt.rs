//! JWT access tokens in the RFC 9068 profile, signed with RSA (`RS256`, RFC 7518 §3.3: the one
//! algorithm RFC 9068 §2.1 requires, and the default), P-256 (`ES256`) or Ed25519 (`EdDSA`,
//! RFC 8037); each client may have its own (see `app::keys`).
//!
//! The header carries `typ: at+jwt` (RFC 9068 §2.1) and the signing key's `kid`, which is the
//! key's RFC 7638 thumbprint, so a resource server can pick the key from the JWKS even across a
//! rotation.
//!
//! ring signs and verifies every algorithm; it cannot generate RSA keys, so the `rsa` crate
//! makes those (and nothing else: its own signing is not used).

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{
    EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING,
};
use serde::{Deserialize, Serialize};

/// Claims of an access token (RFC 9068 §2.2), plus the device it was issued to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// The issuer: this server's public URL.
    pub iss: String,
    /// The user the device acts for (for client_credentials: the client id).
    pub sub: String,
    /// The audience: REQUIRED by RFC 9068 §2.2, so always present in what we sign (empty only
    /// in a token signed before version 4, which had none unless configured).
    #[serde(skip_serializing_if = "Audience::is_empty", default)]
    pub aud: Audience,
    /// The OAuth client the token was issued to.
    pub client_id: String,
    /// Space-separated granted scopes.
    pub scope: String,
    /// Issued at, seconds since the epoch.
    pub iat: i64,
    /// Expiry, seconds since the epoch.
    pub exp: i64,
    /// Unique token id.
    pub jti: String,
    /// The device record the token belongs to (absent for client_credentials).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub device_id: Option<String>,
}

/// The `aud` claim (RFC 7519 §4.1.3): one audience is written as a string, several as an
/// array, the form every verifier accepts for each.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Audience(pub Vec<String>);

impl Audience {
    /// One audience.
    pub fn one(aud: impl Into<String>) -> Audience {
        Audience(vec![aud.into()])
    }

    /// Whether there is none (only in tokens signed before `aud` was always set).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The claim's JSON value, as signed.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).expect("audience serializes")
    }
}

impl Serialize for Audience {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0.as_slice() {
            [one] => s.serialize_str(one),
            many => many.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for Audience {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Audience, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Aud {
            One(String),
            Many(Vec<String>),
        }
        Ok(match Aud::deserialize(d)? {
            Aud::One(a) => Audience(vec![a]),
            Aud::Many(a) => Audience(a),
        })
    }
}

/// A JWS algorithm hallpass signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256 over a 2048-bit key (RFC 7518 §3.3): the algorithm RFC
    /// 9068 §2.1 requires and every verifier and gateway accepts; the slowest to sign.
    RS256,
    /// ECDSA P-256 with SHA-256 (RFC 7518 §3.4): accepted by every common library and by most
    /// gateways, some thirty times cheaper to sign than RS256 (`cargo bench --bench sign`).
    ES256,
    /// Ed25519 (RFC 8037): small, fast, deterministic; not accepted by Node's `jsonwebtoken`.
    EdDSA,
}

impl Algorithm {
    /// Every algorithm, in a fixed order (the index of [`Algorithm::index`]).
    pub const ALL: [Algorithm; 3] = [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA];

    /// The JOSE `alg` name, also the stored `signing_keys.algorithm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
            Algorithm::EdDSA => "EdDSA",
        }
    }

    /// Parses a JOSE `alg` name (exactly: JOSE names are case-sensitive).
    pub fn parse(s: &str) -> Option<Algorithm> {
        Algorithm::ALL.into_iter().find(|a| a.as_str() == s)
    }

    /// The position in [`Algorithm::ALL`], for per-algorithm tables.
    pub fn index(self) -> usize {
        match self {
            Algorithm::RS256 => 0,
            Algorithm::ES256 => 1,
            Algorithm::EdDSA => 2,
        }
    }

    /// The names, for messages: `"RS256", "ES256" or "EdDSA"`.
    pub fn names() -> String {
        let quoted: Vec<String> = Algorithm::ALL
            .iter()
            .map(|a| format!("\"{}\"", a.as_str()))
            .collect();
        format!(
            "{} or {}",
            quoted[..quoted.len() - 1].join(", "),
            quoted[quoted.len() - 1]
        )
    }
}

/// Size of the RSA keys hallpass generates: RFC 7518 §3.3 requires at least 2048 bits, and
/// NIST SP 800-57 Part 1 rates 2048 bits acceptable through 2030. Each doubling of the size
/// costs about eight times the signing time (`cargo bench --bench sign`), and an access token
/// lives minutes, so 2048 it is; `keys import` takes larger keys (up to ring's 4096).
pub const RSA_BITS: usize = 2048;

enum Pair {
    Rsa(RsaKeyPair),
    Ec(EcdsaKeyPair),
    Ed(Ed25519KeyPair),
}

/// A signing key with its id.
pub struct SigningKey {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// Which algorithm the key is for.
    pub algorithm: Algorithm,
    pair: Pair,
}

impl SigningKey {
    /// Parses a stored PKCS#8 document (ring checks the key's consistency).
    pub fn from_pkcs8(algorithm: Algorithm, pkcs8: &[u8]) -> Result<SigningKey, String> {
        let pair = match algorithm {
            Algorithm::RS256 => {
                Pair::Rsa(RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| format!("bad RSA key: {e}"))?)
            }
            Algorithm::ES256 => Pair::Ec(
                EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    pkcs8,
                    &SystemRandom::new(),
                )
                .map_err(|e| format!("bad P-256 key: {e}"))?,
            ),
            // PKCS#8 v1 (what OpenSSL writes, without the public key) as well as v2 (what ring
            // writes); the public key, when present, is checked against the private one.
            Algorithm::EdDSA => Pair::Ed(
                Ed25519KeyPair::from_pkcs8_maybe_unchecked(pkcs8)
                    .map_err(|e| format!("bad Ed25519 key: {e}"))?,
            ),
        };
        let mut key = SigningKey {
            kid: String::new(),
            algorithm,
            pair,
        };
        key.kid = thumbprint(algorithm, &key.public_key()).ok_or("unreadable public key")?;
        Ok(key)
    }

    /// A new key, returned with its PKCS#8 document for storage. An RSA key takes tens to
    /// hundreds of milliseconds (a search for primes); the others microseconds.
    pub fn generate(algorithm: Algorithm) -> (SigningKey, Vec<u8>) {
        let rng = SystemRandom::new();
        let pkcs8 = match algorithm {
            Algorithm::RS256 => {
                use rsa::pkcs8::EncodePrivateKey;
                let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
                    .expect("RSA key generation");
                key.to_pkcs8_der()
                    .expect("RSA key encodes")
                    .as_bytes()
                    .to_vec()
            }
            Algorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .expect("P-256 key generation")
                    .as_ref()
                    .to_vec()
            }
            Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
                .expect("Ed25519 key generation")
                .as_ref()
                .to_vec(),
        };
        let key = SigningKey::from_pkcs8(algorithm, &pkcs8).expect("freshly generated key parses");
        (key, pkcs8)
    }

    /// The public key: the DER `RSAPublicKey` (RFC 8017 A.1.1) for RSA, the 65-byte
    /// uncompressed point for P-256, 32 raw bytes for Ed25519.
    pub fn public_key(&self) -> Vec<u8> {
        match &self.pair {
            Pair::Rsa(p) => p.public().as_ref().to_vec(),
            Pair::Ec(p) => p.public_key().as_ref().to_vec(),
            Pair::Ed(p) => p.public_key().as_ref().to_vec(),
        }
    }

    /// The public half, as published.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            kid: self.kid.clone(),
            algorithm: self.algorithm,
            public: self.public_key(),
        }
    }

    /// Signs `claims` as a compact JWS with `typ: at+jwt` (RFC 9068 §2.1).
    pub fn sign<C: Serialize>(&self, claims: &C) -> String {
        let header =
            serde_json::json!({"alg": self.algorithm.as_str(), "typ": "at+jwt", "kid": self.kid});
        let mut out = B64URL.encode(header.to_string());
        out.push('.');
        out.push_str(&B64URL.encode(serde_json::to_vec(claims).expect("claims serialize")));
        let sig = match &self.pair {
            Pair::Rsa(p) => {
                let mut sig = vec![0; p.public().modulus_len()];
                p.sign(
                    &ring::signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    out.as_bytes(),
                    &mut sig,
                )
                .expect("RSA signing");
                sig
            }
            Pair::Ec(p) => p
                .sign(&SystemRandom::new(), out.as_bytes())
                .expect("ECDSA signing")
                .as_ref()
                .to_vec(),
            Pair::Ed(p) => p.sign(out.as_bytes()).as_ref().to_vec(),
        };
        out.push('.');
        out.push_str(&B64URL.encode(sig));
        out
    }
}

/// A published public key: what verification and the JWKS need.
#[derive(Debug, Clone)]
pub struct PublicKey {
    /// The key id.
    pub kid: String,
    /// Its algorithm.
    pub algorithm: Algorithm,
    /// Raw public key bytes (see [`SigningKey::public_key`]).
    pub public: Vec<u8>,
}

/// The modulus and exponent of a DER `RSAPublicKey`, big-endian without leading zeros.
fn rsa_components(der: &[u8]) -> Option<(&[u8], &[u8])> {
    use rsa::pkcs1::der::Decode;
    let key = rsa::pkcs1::RsaPublicKey::from_der(der).ok()?;
    Some((key.modulus.as_bytes(), key.public_exponent.as_bytes()))
}

/// The public JWK of a key (RFC 7518 §6.3 for RSA, §6.2 for P-256, RFC 8037 §2 for Ed25519);
/// `None` for a stored public key that cannot be read.
pub fn jwk(key: &PublicKey) -> Option<serde_json::Value> {
    Some(match key.algorithm {
        Algorithm::RS256 => {
            let (n, e) = rsa_components(&key.public)?;
            serde_json::json!({
                "kty": "RSA",
                "n": B64URL.encode(n),
                "e": B64URL.encode(e),
                "kid": key.kid,
                "alg": "RS256",
                "use": "sig",
            })
        }
        Algorithm::ES256 => serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": B64URL.encode(key.public.get(1..33)?),
            "y": B64URL.encode(key.public.get(33..65)?),
            "kid": key.kid,
            "alg": "ES256",
            "use": "sig",
        }),
        Algorithm::EdDSA => serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": B64URL.encode(&key.public),
            "kid": key.kid,
            "alg": "EdDSA",
            "use": "sig",
        }),
    })
}

/// RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order.
pub fn thumbprint(algorithm: Algorithm, public_key: &[u8]) -> Option<String> {
    let canonical = match algorithm {
        Algorithm::RS256 => {
            let (n, e) = rsa_components(public_key)?;
            format!(
                r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#,
                B64URL.encode(e),
                B64URL.encode(n)
            )
        }
        Algorithm::ES256 => format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            B64URL.encode(public_key.get(1..33)?),
            B64URL.encode(public_key.get(33..65)?)
        ),
        Algorithm::EdDSA => format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            B64URL.encode(public_key)
        ),
    };
    Some(B64URL.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    )))
}

/// Verifies a compact JWS signed by one of `keys` and returns its claims (expiry is the
/// caller's check). The algorithm comes from our key, never from the token: a header whose
/// `alg` differs from the key's is refused.
pub fn verify(token: &str, keys: &[PublicKey]) -> Option<AccessClaims> {
    verify_with_kid(token, keys).map(|(claims, _)| claims)
}

/// [`verify`], also naming the key that verified the token.
fn verify_with_kid<'k>(token: &str, keys: &'k [PublicKey]) -> Option<(AccessClaims, &'k str)> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let header: serde_json::Value = serde_json::from_slice(&B64URL.decode(h).ok()?).ok()?;
    let kid = header.get("kid")?.as_str()?;
    let key = keys.iter().find(|k| k.kid == kid)?;
    if header.get("alg")?.as_str()? != key.algorithm.as_str() {
        return None;
    }
    let sig = B64URL.decode(s).ok()?;
    let signed = &token[..h.len() + 1 + p.len()];
    let alg: &dyn ring::signature::VerificationAlgorithm = match key.algorithm {
        Algorithm::RS256 => &ring::signature::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::ES256 => &ring::signature::ECDSA_P256_SHA256_FIXED,
        Algorithm::EdDSA => &ring::signature::ED25519,
    };
    ring::signature::UnparsedPublicKey::new(alg, &key.public)
        .verify(signed.as_bytes(), &sig)
        .ok()?;
    Some((payload(p)?, &key.kid))
}

fn payload(p: &str) -> Option<AccessClaims> {
    serde_json::from_slice(&B64URL.decode(p).ok()?).ok()
}

/// Most tokens [`Verified`] remembers (~130 bytes each).
const MAX_VERIFIED: usize = 16_384;

/// Access tokens whose signature was verified recently, so that the same token checked again
/// (a resource server introspects it on every request it serves; a client sends it with every
/// management API call) skips the signature check: 55 µs for Ed25519 and 62 µs for ES256 on
/// the benchmark machine (`cargo bench --bench sign`, wall time, when it was written; its CPU
/// time since: 18 µs RS256, 33 µs EdDSA, 39 µs ES256), against a SHA-256 of the token and the
/// decoding of its payload.
///
/// Only a token's validity *under a key* is remembered, keyed by the SHA-256 of the whole
/// token, so a token that differs in any byte is a new token. A hit counts only while the key
/// that verified it is still among the keys the caller passes: a revoked key's tokens fail at
/// once, as without the cache (its `kid` is the RFC 7638 thumbprint of the public key, so the
/// same `kid` is the same key). Expiry, revocation and the device's state are the caller's
/// checks, made at every use as before. Failures are not remembered, so forged tokens cannot
/// fill it. When full, entries past their `exp` go first; if none has, the cache is cleared:
/// bounded memory matters more than the hit rate under a flood of distinct tokens.
#[derive(Default)]
pub struct Verified {
    seen: std::sync::Mutex<std::collections::HashMap<[u8; 32], Seen>>,
}

/// One remembered verification: which key verified the token, and the token's `exp`.
struct Seen {
    kid: Box<str>,
    exp: i64,
}

impl Verified {
    /// An empty cache.
    pub fn new() -> Verified {
        Verified::default()
    }

    /// [`verify`], remembering success (see the type's documentation).
    pub fn verify(&self, token: &str, keys: &[PublicKey]) -> Option<AccessClaims> {
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let id: [u8; 32] = digest.as_ref().try_into().expect("SHA-256 is 32 bytes");
        let known = {
            let seen = self.seen.lock().expect("verified cache poisoned");
            seen.get(&id)
                .is_some_and(|s| keys.iter().any(|k| *k.kid == *s.kid))
        };
        if known {
            // Verified before under a key still passed in: only the payload is needed.
            return payload(token.split('.').nth(1)?);
        }
        let (claims, kid) = verify_with_kid(token, keys)?;
        let mut seen = self.seen.lock().expect("verified cache poisoned");
        if seen.len() >= MAX_VERIFIED && !seen.contains_key(&id) {
            let now = crate::clock::now_ms() / 1000;
            seen.retain(|_, s| s.exp > now);
            if seen.len() >= MAX_VERIFIED {
                seen.clear();
            }
        }
        seen.insert(
            id,
            Seen {
                kid: kid.into(),
                exp: claims.exp,
            },
        );
        Some(claims)
    }

    /// How many verifications are remembered (for tests).
    pub fn len(&self) -> usize {
        self.seen.lock().expect("verified cache poisoned").len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> AccessClaims {
        AccessClaims {
            iss: "http://x".into(),
            sub: "u".into(),
            aud: Audience::one("https://api.example"),
            client_id: "c".into(),
            scope: "a b".into(),
            iat: 1,
            exp: 2,
            jti: "j".into(),
            device_id: Some("d".into()),
        }
    }

    fn public(k: &SigningKey) -> PublicKey {
        k.public()
    }

    #[test]
    fn sign_then_verify_every_algorithm() {
        for alg in Algorithm::ALL {
            let (key, pkcs8) = SigningKey::generate(alg);
            let again = SigningKey::from_pkcs8(alg, &pkcs8).unwrap();
            assert_eq!(key.kid, again.kid);
            let token = key.sign(&claims());
            let keys = vec![public(&key)];
            assert_eq!(verify(&token, &keys), Some(claims()), "{alg:?}");
            // A flipped payload byte fails.
            let mut bad = token.clone().into_bytes();
            let i = token.find('.').unwrap() + 3;
            bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(verify(std::str::from_utf8(&bad).unwrap(), &keys), None);
            // An unknown key fails.
            let (other, _) = SigningKey::generate(alg);
            assert_eq!(verify(&other.sign(&claims()), &keys), None);
            let header = token.split('.').next().unwrap();
            let header: serde_json::Value =
                serde_json::from_slice(&B64URL.decode(header).unwrap()).unwrap();
            assert_eq!(header["typ"], "at+jwt");
            assert_eq!(header["alg"], alg.as_str());
            assert_eq!(header["kid"], key.kid.as_str());
            let jwk = jwk(&keys[0]).unwrap();
            assert_eq!(jwk["kid"], key.kid.as_str());
            assert_eq!(jwk["alg"], alg.as_str());
        }
    }

    #[test]
    fn a_remembered_verification_ends_with_its_key() {
        for alg in Algorithm::ALL {
            let cache = Verified::new();
            let (key, _) = SigningKey::generate(alg);
            let (other, _) = SigningKey::generate(alg);
            let token = key.sign(&claims());
            let both = vec![public(&other), public(&key)];
            assert_eq!(cache.verify(&token, &both), Some(claims()), "{alg:?}");
            assert_eq!(cache.len(), 1);
            // Remembered: still valid, and no second entry.
            assert_eq!(cache.verify(&token, &both), Some(claims()));
            assert_eq!(cache.len(), 1);
            // Its key revoked (no longer passed in): refused, though remembered.
            assert_eq!(cache.verify(&token, &both[..1]), None);
            assert_eq!(cache.verify(&token, &[]), None);
            // A hit skips the signature check: it trusts the kid, which is the thumbprint of
            // the public key, so a key passed in under that kid is that key. (A made-up one
            // shows the skip; uncached, it fails.)
            let mut impostor = public(&other);
            impostor.kid = key.kid.clone();
            assert_eq!(verify(&token, std::slice::from_ref(&impostor)), None);
            assert_eq!(cache.verify(&token, &[impostor]), Some(claims()));
            // A token differing in one byte is checked in full, and fails.
            let mut bad = token.clone().into_bytes();
            let i = token.find('.').unwrap() + 3;
            bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
            assert_eq!(
                cache.verify(std::str::from_utf8(&bad).unwrap(), &both),
                None
            );
            // Failures are not remembered.
            assert_eq!(cache.len(), 1);
            assert_eq!(cache.verify("a.b.c", &both), None);
            assert_eq!(cache.len(), 1);
        }
    }

    #[test]
    fn the_verified_cache_stays_bounded() {
        let cache = Verified::new();
        let (key, _) = SigningKey::generate(Algorithm::EdDSA);
        let keys = vec![public(&key)];
        let now = crate::clock::now_ms() / 1000;
        // Remembers `n` made-up tokens, named `{prefix}{i}`, that expire at `exp`.
        let fill = |prefix: &str, n: usize, exp: i64| {
            let mut seen = cache.seen.lock().unwrap();
            for i in 0..n {
                let id =
                    ring::digest::digest(&ring::digest::SHA256, format!("{prefix}{i}").as_bytes());
                let kid = key.kid.clone().into();
                seen.insert(id.as_ref().try_into().unwrap(), Seen { kid, exp });
            }
        };
        // Full of expired tokens: they make room for a new one.
        fill("old", MAX_VERIFIED, now - 1);
        assert_eq!(cache.len(), MAX_VERIFIED);
        let mut live = claims();
        live.exp = now + 600;
        assert!(cache.verify(&key.sign(&live), &keys).is_some());
        assert_eq!(cache.len(), 1, "expired entries dropped");
        // Full of live ones: cleared rather than grown.
        fill("live", MAX_VERIFIED - 1, now + 600);
        assert_eq!(cache.len(), MAX_VERIFIED);
        live.jti = "another".into();
        assert!(cache.verify(&key.sign(&live), &keys).is_some());
        assert_eq!(cache.len(), 1, "cleared, then the new one");
    }

    #[test]
    fn alg_confusion_is_refused() {
        let (key, _) = SigningKey::generate(Algorithm::EdDSA);
        let mut k = public(&key);
        k.algorithm = Algorithm::ES256;
        assert_eq!(verify(&key.sign(&claims()), &[k]), None);
        // An RS256 token whose header says another algorithm, under the RSA key's kid.
        let (rsa, _) = SigningKey::generate(Algorithm::RS256);
        let token = rsa.sign(&claims());
        let parts: Vec<&str> = token.split('.').collect();
        let header = serde_json::json!({"alg": "ES256", "typ": "at+jwt", "kid": rsa.kid});
        let forged = format!(
            "{}.{}.{}",
            B64URL.encode(header.to_string()),
            parts[1],
            parts[2]
        );
        assert_eq!(verify(&forged, &[public(&rsa)]), None);
        assert!(verify(&token, &[public(&rsa)]).is_some());
    }

    /// The RSA JWK and kid: RFC 7638 §3.1's own example key gives the thumbprint it lists.
    #[test]
    fn rsa_thumbprint_matches_rfc_7638() {
        let n = "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw";
        let e = "AQAB";
        // The DER RSAPublicKey of (n, e), as ring would hold it.
        let der = {
            use rsa::pkcs1::der::Encode;
            let n = B64URL.decode(n).unwrap();
            let e = B64URL.decode(e).unwrap();
            rsa::pkcs1::RsaPublicKey {
                modulus: rsa::pkcs1::UintRef::new(&n).unwrap(),
                public_exponent: rsa::pkcs1::UintRef::new(&e).unwrap(),
            }
            .to_der()
            .unwrap()
        };
        assert_eq!(
            thumbprint(Algorithm::RS256, &der).unwrap(),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
        let jwk = jwk(&PublicKey {
            kid: "k".into(),
            algorithm: Algorithm::RS256,
            public: der,
        })
        .unwrap();
        assert_eq!((jwk["n"].as_str(), jwk["e"].as_str()), (Some(n), Some(e)));
        assert_eq!(thumbprint(Algorithm::RS256, b"not DER"), None);
    }

    /// Generated RSA keys are 2048-bit and sign with RSASSA-PKCS1-v1_5: a 256-byte signature.
    #[test]
    fn generated_rsa_keys_are_2048_bits() {
        let (key, pkcs8) = SigningKey::generate(Algorithm::RS256);
        use rsa::pkcs8::DecodePrivateKey;
        use rsa::traits::PublicKeyParts;
        let parsed = rsa::RsaPrivateKey::from_pkcs8_der(&pkcs8).unwrap();
        assert_eq!(parsed.n().bits(), RSA_BITS);
        let token = key.sign(&claims());
        let sig = B64URL.decode(token.rsplit('.').next().unwrap()).unwrap();
        assert_eq!(sig.len(), 256);
    }

    #[test]
    fn audience_is_a_string_or_an_array() {
        let one = Audience::one("https://a");
        assert_eq!(one.to_json(), serde_json::json!("https://a"));
        let two = Audience(vec!["https://a".into(), "https://b".into()]);
        assert_eq!(two.to_json(), serde_json::json!(["https://a", "https://b"]));
        for a in [one, two] {
            let back: Audience = serde_json::from_value(a.to_json()).unwrap();
            assert_eq!(back, a);
        }
        // A token signed before `aud` was always set still reads.
        let mut old = serde_json::to_value(claims()).unwrap();
        old.as_object_mut().unwrap().remove("aud");
        let parsed: AccessClaims = serde_json::from_value(old).unwrap();
        assert!(parsed.aud.is_empty());
    }
}
