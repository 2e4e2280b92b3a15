//! JWT access tokens in the RFC 9068 profile, signed with Ed25519 (`EdDSA`, RFC 8037).
//!
//! The header carries `typ: at+jwt` (RFC 9068 §2.1) and the signing key's `kid`, which is the
//! key's RFC 7638 thumbprint, so a resource server can pick the key from the JWKS even across a
//! rotation.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use base64::Engine;
use ring::signature::{Ed25519KeyPair, KeyPair};
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

/// An Ed25519 signing key with its id.
pub struct SigningKey {
    /// RFC 7638 thumbprint of the public key.
    pub kid: String,
    /// The key pair, parsed once.
    pub pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Parses a stored PKCS#8 document.
    pub fn from_pkcs8(pkcs8: &[u8]) -> Result<SigningKey, String> {
        let pair =
            Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| format!("bad Ed25519 key: {e}"))?;
        let kid = thumbprint(pair.public_key().as_ref());
        Ok(SigningKey { kid, pair })
    }

    /// A new key, returned with its PKCS#8 document for storage.
    pub fn generate() -> (SigningKey, Vec<u8>) {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng)
            .expect("Ed25519 key generation")
            .as_ref()
            .to_vec();
        let key = SigningKey::from_pkcs8(&pkcs8).expect("freshly generated key parses");
        (key, pkcs8)
    }

    /// The raw 32-byte public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// Signs `claims` as a compact JWS.
    pub fn sign<C: Serialize>(&self, claims: &C) -> String {
        let header = serde_json::json!({"alg": "EdDSA", "typ": "at+jwt", "kid": self.kid});
        let mut out = B64URL.encode(header.to_string());
        out.push('.');
        out.push_str(&B64URL.encode(serde_json::to_vec(claims).expect("claims serialize")));
        let sig = self.pair.sign(out.as_bytes());
        out.push('.');
        out.push_str(&B64URL.encode(sig.as_ref()));
        out
    }
}

/// The public JWK of an Ed25519 key (RFC 8037 §2).
pub fn jwk(kid: &str, public_key: &[u8]) -> serde_json::Value {
    serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": B64URL.encode(public_key),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    })
}

/// RFC 7638 thumbprint: SHA-256 over the required members in lexicographic order.
pub fn thumbprint(public_key: &[u8]) -> String {
    let canonical = format!(
        r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#,
        B64URL.encode(public_key)
    );
    B64URL.encode(ring::digest::digest(
        &ring::digest::SHA256,
        canonical.as_bytes(),
    ))
}

/// Verifies a compact JWS signed by one of `keys` (kid, raw public key) and returns its claims.
/// Only `EdDSA` is accepted: the algorithm comes from our key, never from the token.
pub fn verify(token: &str, keys: &[(String, Vec<u8>)]) -> Option<AccessClaims> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    let header: serde_json::Value = serde_json::from_slice(&B64URL.decode(h).ok()?).ok()?;
    if header.get("alg")?.as_str()? != "EdDSA" {
        return None;
    }
    let kid = header.get("kid")?.as_str()?;
    let (_, public) = keys.iter().find(|(k, _)| k == kid)?;
    let sig = B64URL.decode(s).ok()?;
    let signed = &token[..h.len() + 1 + p.len()];
    ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, public)
        .verify(signed.as_bytes(), &sig)
        .ok()?;
    serde_json::from_slice(&B64URL.decode(p).ok()?).ok()
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

    #[test]
    fn sign_then_verify() {
        let (key, pkcs8) = SigningKey::generate();
        let again = SigningKey::from_pkcs8(&pkcs8).unwrap();
        assert_eq!(key.kid, again.kid);
        let token = key.sign(&claims());
        let keys = vec![(key.kid.clone(), key.public_key())];
        assert_eq!(verify(&token, &keys), Some(claims()));
        // A flipped payload byte fails.
        let mut bad = token.clone().into_bytes();
        let i = token.find('.').unwrap() + 3;
        bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
        assert_eq!(verify(std::str::from_utf8(&bad).unwrap(), &keys), None);
        // An unknown key fails.
        let (other, _) = SigningKey::generate();
        assert_eq!(verify(&other.sign(&claims()), &keys), None);
        let header = token.split('.').next().unwrap();
        let header: serde_json::Value =
            serde_json::from_slice(&B64URL.decode(header).unwrap()).unwrap();
        assert_eq!(header["typ"], "at+jwt");
        assert_eq!(header["kid"], key.kid.as_str());
    }
}
