//! Sealing the signing keys' private halves at rest, with a secret the database does not hold
//! (issue 18 §1), in the manner of Ory Hydra's `secrets.system`.
//!
//! The operator names a file of secrets (`keys.sealing_secrets_file`, one secret a line). The
//! first secret seals every key stored from now on; every secret opens, so a secret is rotated
//! by putting a new one on the first line, keeping the old one below it, running
//! `hallpass keys reseal`, and then deleting the old line.
//!
//! A sealed blob is `HPS1` ‖ the secret's 8-byte fingerprint ‖ a 12-byte random nonce ‖ the
//! AES-256-GCM ciphertext and tag of the PKCS#8 document. The key is HKDF-SHA256 of the secret;
//! the associated data is the key's algorithm and kid, so a blob copied into another row does not
//! open. `HPS1` begins with `H` (0x48), and every PKCS#8 document is a DER SEQUENCE, which
//! begins with 0x30: a stored value is sealed exactly when it starts with the prefix, so keys
//! stored before a secret was configured keep working and need no schema change.
//!
//! Opening happens once per key load (the server caches the active key, see
//! `app::keys::KeyRing`), never per token.

use std::path::{Path, PathBuf};

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::hkdf;

/// How a sealed value starts. Never the start of a PKCS#8 document (0x30).
const PREFIX: &[u8; 4] = b"HPS1";

/// Bytes of a secret's fingerprint in a sealed value.
const FINGERPRINT_LEN: usize = 8;

/// The shortest secret accepted, in bytes: `openssl rand -base64 32` gives 44.
pub const MIN_SECRET_LEN: usize = 32;

/// HKDF salt: names the purpose, so the same secret used elsewhere yields other keys.
const KDF_SALT: &[u8] = b"hallpass signing-key sealing v1";

/// One secret, as the keys derived from it (the secret itself is not kept).
struct Secret {
    key: LessSafeKey,
    fingerprint: [u8; FINGERPRINT_LEN],
}

/// An HKDF output length for ring's `expand`.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

impl Secret {
    fn derive(secret: &[u8]) -> Secret {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, KDF_SALT).extract(secret);
        let okm = prk
            .expand(&[b"aes-256-gcm key"], &AES_256_GCM)
            .expect("HKDF output of the AEAD key's length");
        let key = LessSafeKey::new(UnboundKey::from(okm));
        let mut fingerprint = [0u8; FINGERPRINT_LEN];
        prk.expand(&[b"fingerprint"], Len(FINGERPRINT_LEN))
            .and_then(|okm| okm.fill(&mut fingerprint))
            .expect("HKDF output of 8 bytes");
        Secret { key, fingerprint }
    }
}

/// Why a stored key did not open.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The key is sealed and no secret is configured.
    #[error(
        "signing key {kid} is sealed, but no sealing secret is configured \
         (keys.sealing_secrets_file / HALLPASS_KEYS_SEALING_SECRETS_FILE)"
    )]
    NoSecret {
        /// The key's id.
        kid: String,
    },
    /// The key was sealed with a secret that is not in the file.
    #[error(
        "signing key {kid} is sealed with a secret (fingerprint {fingerprint}) that is not in \
         the sealing secrets file; put that secret back on a line after the first"
    )]
    UnknownSecret {
        /// The key's id.
        kid: String,
        /// Hex of the sealing secret's fingerprint.
        fingerprint: String,
    },
    /// The fingerprint matched but the value does not open: altered, truncated, or copied from
    /// another row.
    #[error(
        "signing key {kid} does not open with its sealing secret: the stored value was altered \
         or belongs to another key"
    )]
    Damaged {
        /// The key's id.
        kid: String,
    },
}

/// The configured sealing secrets; none configured means keys are stored as plain PKCS#8.
pub struct Sealer {
    /// The first seals; all open.
    secrets: Vec<Secret>,
    /// Where they were read from, for messages.
    source: Option<PathBuf>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets, nor anything derived from them.
        f.debug_struct("Sealer")
            .field("secrets", &self.secrets.len())
            .field("source", &self.source)
            .finish()
    }
}

impl Sealer {
    /// No secret: keys are stored and read as plain PKCS#8.
    pub fn none() -> Sealer {
        Sealer {
            secrets: Vec::new(),
            source: None,
        }
    }

    /// The secrets in `text`: one a line, surrounding whitespace ignored, empty lines and lines
    /// starting with `#` skipped; the first seals.
    pub fn from_text(text: &str) -> Result<Sealer, String> {
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if lines.is_empty() {
            return Err(
                "holds no secret (one a line; make one with `openssl rand -base64 32`)".into(),
            );
        }
        if let Some(n) = lines.iter().position(|l| l.len() < MIN_SECRET_LEN) {
            return Err(format!(
                "secret {} is shorter than {MIN_SECRET_LEN} characters (make one with \
                 `openssl rand -base64 32`)",
                n + 1
            ));
        }
        Ok(Sealer {
            secrets: lines.iter().map(|l| Secret::derive(l.as_bytes())).collect(),
            source: None,
        })
    }

    /// The secrets in the file at `path` (see [`Sealer::from_text`]). Warns when other users
    /// may read it.
    pub fn from_file(path: &Path) -> Result<Sealer, String> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            format!(
                "cannot read the sealing secrets file {}: {e}",
                path.display()
            )
        })?;
        warn_if_others_may_read(path);
        let mut sealer = Sealer::from_text(&text)
            .map_err(|e| format!("the sealing secrets file {}: {e}", path.display()))?;
        sealer.source = Some(path.to_path_buf());
        Ok(sealer)
    }

    /// The sealer the configuration asks for.
    pub fn from_config(config: &crate::config::Config) -> Result<Sealer, String> {
        match &config.sealing_secrets_file {
            Some(path) => Sealer::from_file(path),
            None => Ok(Sealer::none()),
        }
    }

    /// Whether a secret is configured (new keys are sealed).
    pub fn is_configured(&self) -> bool {
        !self.secrets.is_empty()
    }

    /// How many secrets are configured.
    pub fn secrets(&self) -> usize {
        self.secrets.len()
    }

    /// The file the secrets came from.
    pub fn source(&self) -> Option<&Path> {
        self.source.as_deref()
    }

    /// What to store for the key `kid` of `algorithm` whose PKCS#8 document is `pkcs8`: sealed
    /// with the first secret, or `pkcs8` itself when no secret is configured.
    pub fn seal(&self, kid: &str, algorithm: &str, pkcs8: &[u8]) -> Vec<u8> {
        let Some(secret) = self.secrets.first() else {
            return pkcs8.to_vec();
        };
        let nonce_bytes = crate::secrets::random_bytes::<NONCE_LEN>();
        let mut out = Vec::with_capacity(
            PREFIX.len() + FINGERPRINT_LEN + NONCE_LEN + pkcs8.len() + AES_256_GCM.tag_len(),
        );
        out.extend_from_slice(PREFIX);
        out.extend_from_slice(&secret.fingerprint);
        out.extend_from_slice(&nonce_bytes);
        let mut body = pkcs8.to_vec();
        secret
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce_bytes),
                Aad::from(associated_data(kid, algorithm)),
                &mut body,
            )
            .expect("AES-GCM sealing of a short message");
        out.extend_from_slice(&body);
        out
    }

    /// The PKCS#8 document of the stored key `kid`: `stored` itself if it is plain, else opened
    /// with whichever configured secret sealed it.
    pub fn open(&self, kid: &str, algorithm: &str, stored: &[u8]) -> Result<Vec<u8>, SealError> {
        if !is_sealed(stored) {
            return Ok(stored.to_vec());
        }
        if self.secrets.is_empty() {
            return Err(SealError::NoSecret { kid: kid.into() });
        }
        let damaged = || SealError::Damaged { kid: kid.into() };
        let rest = &stored[PREFIX.len()..];
        if rest.len() < FINGERPRINT_LEN + NONCE_LEN + AES_256_GCM.tag_len() {
            return Err(damaged());
        }
        let (fingerprint, rest) = rest.split_at(FINGERPRINT_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let Some(secret) = self.secrets.iter().find(|s| s.fingerprint == fingerprint) else {
            return Err(SealError::UnknownSecret {
                kid: kid.into(),
                fingerprint: fingerprint.iter().map(|b| format!("{b:02x}")).collect(),
            });
        };
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| damaged())?;
        let mut body = sealed.to_vec();
        let opened = secret
            .key
            .open_in_place(nonce, Aad::from(associated_data(kid, algorithm)), &mut body)
            .map_err(|_| damaged())?;
        Ok(opened.to_vec())
    }

    /// Whether `stored` is sealed with the first (sealing) secret: nothing to reseal.
    pub fn sealed_with_first(&self, stored: &[u8]) -> bool {
        self.secrets.first().is_some_and(|s| {
            is_sealed(stored)
                && stored.get(PREFIX.len()..PREFIX.len() + FINGERPRINT_LEN)
                    == Some(&s.fingerprint[..])
        })
    }
}

/// Whether a stored private key is sealed (else it is a plain PKCS#8 document).
pub fn is_sealed(stored: &[u8]) -> bool {
    stored.starts_with(PREFIX)
}

/// The bytes of [`PREFIX`], for SQL that tells sealed rows apart.
pub const SEALED_PREFIX: &[u8] = PREFIX;

/// What binds a sealed value to its row: the algorithm and the kid (the kid is the public
/// key's thumbprint, so it names exactly one private key).
fn associated_data(kid: &str, algorithm: &str) -> Vec<u8> {
    let mut aad = b"hallpass signing key\0".to_vec();
    aad.extend_from_slice(algorithm.as_bytes());
    aad.push(0);
    aad.extend_from_slice(kid.as_bytes());
    aad
}

/// Logs a warning when users other than the owner may read `path`.
fn warn_if_others_may_read(path: &Path) {
    use std::os::unix::fs::MetadataExt;
    if let Ok(m) = std::fs::metadata(path) {
        if m.mode() & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{:o}", m.mode() & 0o777),
                fix = format!("chmod 600 {}", path.display()),
                "the sealing secrets file may be read by other users"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "a-secret-of-at-least-thirty-two-characters";
    const B: &str = "another-secret-of-thirty-two-characters-or-more";

    #[test]
    fn sealed_values_open_only_with_their_secret_kid_and_algorithm() {
        let sealer = Sealer::from_text(A).unwrap();
        let pkcs8 = b"\x30\x51 a PKCS#8 document".to_vec();
        let sealed = sealer.seal("kid1", "EdDSA", &pkcs8);
        assert!(is_sealed(&sealed));
        assert!(!sealed.windows(pkcs8.len()).any(|w| w == pkcs8));
        assert_eq!(sealer.open("kid1", "EdDSA", &sealed).unwrap(), pkcs8);
        // Another row's kid or algorithm: refused.
        assert!(matches!(
            sealer.open("kid2", "EdDSA", &sealed),
            Err(SealError::Damaged { .. })
        ));
        assert!(matches!(
            sealer.open("kid1", "ES256", &sealed),
            Err(SealError::Damaged { .. })
        ));
        // A flipped byte: refused.
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            sealer.open("kid1", "EdDSA", &bad),
            Err(SealError::Damaged { .. })
        ));
        // Without the secret, or with another one: refused, naming the key.
        let e = Sealer::none().open("kid1", "EdDSA", &sealed).unwrap_err();
        assert!(e.to_string().contains("kid1"), "{e}");
        let other = Sealer::from_text(B).unwrap();
        assert!(matches!(
            other.open("kid1", "EdDSA", &sealed),
            Err(SealError::UnknownSecret { .. })
        ));
        // Two seals of one key differ (random nonce).
        assert_ne!(sealed, sealer.seal("kid1", "EdDSA", &pkcs8));
    }

    #[test]
    fn the_first_secret_seals_and_every_secret_opens() {
        let old = Sealer::from_text(A).unwrap();
        let both = Sealer::from_text(&format!("# new first\n{B}\n\n{A}\n")).unwrap();
        assert_eq!(both.secrets(), 2);
        let pkcs8 = b"\x30 key".to_vec();
        let by_old = old.seal("k", "EdDSA", &pkcs8);
        assert_eq!(both.open("k", "EdDSA", &by_old).unwrap(), pkcs8);
        assert!(!both.sealed_with_first(&by_old));
        let by_new = both.seal("k", "EdDSA", &pkcs8);
        assert!(both.sealed_with_first(&by_new));
        assert!(old.open("k", "EdDSA", &by_new).is_err());
    }

    #[test]
    fn plain_keys_pass_through_and_no_secret_stores_plain() {
        let pkcs8 = b"\x30 plain".to_vec();
        assert_eq!(Sealer::none().seal("k", "EdDSA", &pkcs8), pkcs8);
        let sealer = Sealer::from_text(A).unwrap();
        assert_eq!(sealer.open("k", "EdDSA", &pkcs8).unwrap(), pkcs8);
        assert!(!sealer.sealed_with_first(&pkcs8));
    }

    #[test]
    fn short_or_missing_secrets_are_refused() {
        assert!(Sealer::from_text("").is_err());
        assert!(Sealer::from_text("# only a comment\n").is_err());
        let e = Sealer::from_text(&format!("{A}\nshort\n")).unwrap_err();
        assert!(e.contains("secret 2"), "{e}");
    }

    #[test]
    fn debug_shows_no_secret() {
        let text = format!("{:?}", Sealer::from_text(A).unwrap());
        assert!(!text.contains(A), "{text}");
    }
}
