//! JWT access tokens in the RFC 9068 profile, signed with Ed25519 (`EdDSA`, RFC 8037) or,
//! by configuration, P-256 (`ES256`).
//!
//! The header carries `typ: at+jwt` (RFC 9068 §2.1) and the signing key's `kid`, which is the
//! key's RFC 7638 thumbprint, so a resource server can pick the key from the JWKS even across a
//! rotation.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde::{Deserialize, Serialize};

/// Claims of an access token (RFC 9068 §2.2), plus the device it was issued to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// The issuer: this server's public URL.
    pub iss: String,
    /// The user the device acts for (for client_credentials: the client id).
    pub sub: String,
    /// The audience, where one is configured.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub aud: Option<String>,
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

/// A JWS algorithm hallpass signs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// Ed25519 (RFC 8037): the default — small, fast, deterministic.
    EdDSA,
    /// ECDSA P-256 with SHA-256 (RFC 7518 §3.4), for resource servers without EdDSA.
    ES256,
}

impl Algorithm {
    /// The JOSE `alg` name, also the stored `signing_keys.algorithm`.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::EdDSA => "EdDSA",
            Algorithm::ES256 => "ES256",
        }
    }

    /// Parses a JOSE `alg` name.
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s {
            "EdDSA" => Some(Algorithm::EdDSA),
            "ES256" => Some(Algorithm::ES256),
            _ => None,
        }
    }
}

enum Pair {
    Ed(Ed25519KeyPair),
    Ec(EcdsaKeyPair),
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
    /// Parses a stored PKCS#8 document.
    pub fn from_pkcs8(algorithm: Algorithm, pkcs8: &[u8]) -> Result<SigningKey, String> {
        let pair = match algorithm {
            Algorithm::EdDSA => Pair::Ed(
                Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| format!("bad Ed25519 key: {e}"))?,
            ),
            Algorithm::ES256 => Pair::Ec(
                EcdsaKeyPair::from_pkcs8(
                    &ECDSA_P256_SHA256_FIXED_SIGNING,
                    pkcs8,
                    &SystemRandom::new(),
                )
                .map_err(|e| format!("bad P-256 key: {e}"))?,
            ),
        };
        let public = match &pair {
            Pair::Ed(p) => p.public_key().as_ref().to_vec(),
            Pair::Ec(p) => p.public_key().as_ref().to_vec(),
        };
        let kid = thumbprint(algorithm, &public);
        Ok(SigningKey {
            kid,
            algorithm,
            pair,
        })
    }

    /// A new key, returned with its PKCS#8 document for storage.
    pub fn generate(algorithm: Algorithm) -> (SigningKey, Vec<u8>) {
        let rng = SystemRandom::new();
        let pkcs8 = match algorithm {
            Algorithm::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
                .expect("Ed25519 key generation")
                .as_ref()
                .to_vec(),
            Algorithm::ES256 => {
                EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                    .expect("P-256 key generation")
                    .as_ref()
                    .to_vec()
            }
        };
        let key = SigningKey::from_pkcs8(algorithm, &pkcs8).expect("freshly generated key parses");
        (key, pkcs8)
    }

    /// The public key: 32 raw bytes for Ed25519, the 65-byte uncompressed point for P-256.
    pub fn public_key(&self) -> Vec<u8> {
        match &self.pair {
            Pair::Ed(p) => p.public_key().as_ref().to_vec(),
            Pair::Ec(p) => p.public_key().as_ref().to_vec(),
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
            Pair::Ed(p) => p.sign(out.as_bytes()).as_ref().to_vec(),
            Pair::Ec(p) => p
                .sign(&SystemRandom::new(), out.as_bytes())
                .expect("ECDSA signing")
                .as_ref()
                .to_vec(),
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

/// The public JWK of a key (RFC 8037 §2 for Ed25519, RFC 7518 §6.2 for P-256).
pub fn jwk(key: &PublicKey) -> serde_json::Value {
    match key.algorithm {
        Algorithm::EdDSA => serde_json::json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": B64URL.encode(&key.public),
            "kid": key.kid,
            "alg": "EdDSA",
            "use": "sig",
        }),
        Algorithm::ES256 => serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": B64URL.encode(&key.public[1..33]),
            "y": B64URL.encode(&key.public[33..65]),
            "kid": key.kid,
            "alg": "ES256",
            "use": "sig",
        }),
    }
}

/// RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order.
pub fn thumbprint(algorithm: Algorithm, public_key: &[u8]) -> String {
    let canonical = match algorithm {
        Algorithm::EdDSA => format!(
            r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
            B64URL.encode(public_key)
        ),
        Algorithm::ES256 => format!(
            r#"{{"crv":"P-256","kty":"EC","x":"{}","y":"{}"}}"#,
            B64URL.encode(&public_key[1..33]),
            B64URL.encode(&public_key[33..65])
        ),
    };
    B64URL.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
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
        Algorithm::EdDSA => &ring::signature::ED25519,
        Algorithm::ES256 => &ring::signature::ECDSA_P256_SHA256_FIXED,
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
/// management API call) skips the signature check: 55 µs of CPU for Ed25519 and 62 µs for
/// ES256 on the benchmark machine (`cargo bench --bench sign`), against a SHA-256 of the token
/// and the decoding of its payload.
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
            let now = crate::db::now_ms() / 1000;
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
            aud: None,
            client_id: "c".into(),
            scope: "a b".into(),
            iat: 1,
            exp: 2,
            jti: "j".into(),
            device_id: Some("d".into()),
        }
    }

    fn public(k: &SigningKey) -> PublicKey {
        PublicKey {
            kid: k.kid.clone(),
            algorithm: k.algorithm,
            public: k.public_key(),
        }
    }

    #[test]
    fn sign_then_verify_both_algorithms() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
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
            assert_eq!(jwk(&keys[0])["kid"], key.kid.as_str());
        }
    }

    #[test]
    fn a_remembered_verification_ends_with_its_key() {
        for alg in [Algorithm::EdDSA, Algorithm::ES256] {
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
        let now = crate::db::now_ms() / 1000;
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
    }
}
