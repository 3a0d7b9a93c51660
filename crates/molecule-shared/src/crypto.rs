//! Envelope encryption of secrets at rest: AES-256-GCM with a random nonce, associated data that
//! binds every ciphertext to its owner (an org id) and its field, and a leading version byte so
//! that other key modes (KMS data keys) can be added without re-encrypting old rows.
//!
//! Layout of a sealed value, base64-encoded for storage:
//! - version 1 (static key): `1 | nonce (12) | ct+tag`;
//! - version 2 (KMS data key): `2 | wrapped-key length (u16 BE) | wrapped data key | nonce (12) |
//!   ct+tag`. The data key comes from KMS `GenerateDataKey`; only its wrapped (KMS-encrypted) form
//!   is stored, and unwrapping it needs KMS and the same encryption context.
//!
//! The associated data is the same for both: a label, the version byte, owner and field.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;

use crate::secret::Secret;
use crate::token::random_bytes;

pub const VERSION_STATIC_KEY: u8 = 1;
pub const VERSION_KMS: u8 = 2;
/// KMS ciphertext blobs of a 32-byte data key are about 180 bytes; anything near this cap is
/// not one.
const MAX_WRAPPED_KEY: usize = 4096;
const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{var} is malformed: expected 64 hex characters or the base64 encoding of 32 bytes (the value has {len} characters)")]
    Malformed { var: String, len: usize },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    #[error("sealed value is not valid base64")]
    Encoding,
    #[error("sealed value is truncated")]
    Truncated,
    #[error("sealed value has unknown format version {0}")]
    UnknownVersion(u8),
    #[error(
        "sealed value does not decrypt for this owner and field (wrong key, moved, or tampered)"
    )]
    Open,
    #[error("decrypted value is not UTF-8")]
    NotUtf8,
}

/// A 256-bit data-encryption key. `Debug` never prints it.
#[derive(Clone)]
pub struct EncryptionKey([u8; 32]);

impl std::fmt::Debug for EncryptionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("EncryptionKey([redacted])")
    }
}

impl Drop for EncryptionKey {
    fn drop(&mut self) {
        for b in self.0.iter_mut() {
            // SAFETY: `b` is a valid, aligned, exclusive reference into our own array.
            unsafe { std::ptr::write_volatile(b, 0) };
        }
    }
}

impl EncryptionKey {
    pub fn generate() -> Self {
        Self(random_bytes::<32>())
    }

    /// A key from 32 raw bytes (a KMS plaintext data key); `None` for any other length.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        <[u8; 32]>::try_from(bytes).ok().map(Self)
    }

    /// Seals `plaintext` in the version 2 (KMS) format with this key as the data key, storing
    /// `wrapped_key` (the KMS ciphertext of this key) next to the ciphertext.
    pub fn seal_wrapped(
        &self,
        wrapped_key: &[u8],
        owner: &str,
        field: &str,
        plaintext: &str,
    ) -> Result<String, SealError> {
        if wrapped_key.is_empty() || wrapped_key.len() > MAX_WRAPPED_KEY {
            return Err(SealError::Truncated);
        }
        let (nonce, ct) = self.encrypt(VERSION_KMS, owner, field, plaintext);
        let mut out = Vec::with_capacity(3 + wrapped_key.len() + NONCE_LEN + ct.len());
        out.push(VERSION_KMS);
        out.extend_from_slice(&(wrapped_key.len() as u16).to_be_bytes());
        out.extend_from_slice(wrapped_key);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(base64::engine::general_purpose::STANDARD.encode(out))
    }

    /// Parses a key given as 64 hex characters, as base64 of 32 bytes, or as 32 raw bytes. `var`
    /// names the variable it came from, for the error; the error never contains key material.
    pub fn parse(var: &str, value: &Secret) -> Result<Self, KeyError> {
        let raw = value.expose();
        let malformed = || KeyError::Malformed {
            var: var.to_owned(),
            len: raw.chars().count(),
        };
        let bytes: Vec<u8> = if raw.len() == 64 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
            hex::decode(raw).map_err(|_| malformed())?
        } else if let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(raw) {
            decoded
        } else if let Ok(decoded) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(raw) {
            decoded
        } else if raw.len() == 32 {
            raw.as_bytes().to_vec()
        } else {
            return Err(malformed());
        };
        let key: [u8; 32] = bytes.try_into().map_err(|_| malformed())?;
        Ok(Self(key))
    }

    /// The key as base64, the form handed to a tenant in `SECRETS_ENCRYPTION_KEY`.
    pub fn to_base64(&self) -> Secret {
        Secret::new(base64::engine::general_purpose::STANDARD.encode(self.0))
            .expect("a key is never empty")
    }

    fn cipher(&self) -> Aes256Gcm {
        Aes256Gcm::new_from_slice(&self.0).expect("the key is 32 bytes")
    }

    /// AES-256-GCM under a fresh random nonce, with the associated data of `version`.
    fn encrypt(
        &self,
        version: u8,
        owner: &str,
        field: &str,
        plaintext: &str,
    ) -> ([u8; NONCE_LEN], Vec<u8>) {
        let nonce = random_bytes::<NONCE_LEN>();
        let aad = associated_data(version, owner, field);
        let ct = self
            .cipher()
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext.as_bytes(),
                    aad: &aad,
                },
            )
            .expect("AES-GCM encryption of an in-memory buffer cannot fail");
        (nonce, ct)
    }

    /// The inverse of [`EncryptionKey::encrypt`], as UTF-8 text.
    fn decrypt(
        &self,
        version: u8,
        owner: &str,
        field: &str,
        nonce: &[u8],
        ct: &[u8],
    ) -> Result<Secret, SealError> {
        let aad = associated_data(version, owner, field);
        let plain = self
            .cipher()
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad: &aad })
            .map_err(|_| SealError::Open)?;
        let text = String::from_utf8(plain).map_err(|_| SealError::NotUtf8)?;
        Secret::new(text).ok_or(SealError::Open)
    }

    /// Encrypts `plaintext` for `owner` (an org id or other scope) and `field`.
    pub fn seal(&self, owner: &str, field: &str, plaintext: &str) -> String {
        let (nonce, ct) = self.encrypt(VERSION_STATIC_KEY, owner, field, plaintext);
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(VERSION_STATIC_KEY);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        base64::engine::general_purpose::STANDARD.encode(out)
    }

    /// Decrypts a value sealed for exactly this `owner` and `field`.
    pub fn open(&self, owner: &str, field: &str, sealed: &str) -> Result<Secret, SealError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| SealError::Encoding)?;
        let (&version, rest) = bytes.split_first().ok_or(SealError::Truncated)?;
        if version != VERSION_STATIC_KEY {
            return Err(SealError::UnknownVersion(version));
        }
        if rest.len() < NONCE_LEN + 16 {
            return Err(SealError::Truncated);
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        self.decrypt(version, owner, field, nonce, ct)
    }
}

/// The format version of a sealed value (its first byte), without decrypting anything.
pub fn sealed_version(sealed: &str) -> Result<u8, SealError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(sealed)
        .map_err(|_| SealError::Encoding)?;
    bytes.first().copied().ok_or(SealError::Truncated)
}

/// A parsed version 2 (KMS) envelope: the wrapped data key to unwrap with KMS, then the
/// ciphertext to open with it.
pub struct WrappedEnvelope {
    pub wrapped_key: Vec<u8>,
    nonce: [u8; NONCE_LEN],
    ct: Vec<u8>,
}

impl std::fmt::Debug for WrappedEnvelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WrappedEnvelope")
            .field("wrapped_key_len", &self.wrapped_key.len())
            .field("ct_len", &self.ct.len())
            .finish()
    }
}

impl WrappedEnvelope {
    pub fn parse(sealed: &str) -> Result<Self, SealError> {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(sealed)
            .map_err(|_| SealError::Encoding)?;
        let (&version, rest) = bytes.split_first().ok_or(SealError::Truncated)?;
        if version != VERSION_KMS {
            return Err(SealError::UnknownVersion(version));
        }
        if rest.len() < 2 {
            return Err(SealError::Truncated);
        }
        let (len, rest) = rest.split_at(2);
        let len = u16::from_be_bytes([len[0], len[1]]) as usize;
        if len == 0 || len > MAX_WRAPPED_KEY || rest.len() < len + NONCE_LEN + 16 {
            return Err(SealError::Truncated);
        }
        let (wrapped, rest) = rest.split_at(len);
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        Ok(Self {
            wrapped_key: wrapped.to_vec(),
            nonce: nonce.try_into().expect("split at NONCE_LEN"),
            ct: ct.to_vec(),
        })
    }

    /// Decrypts with the unwrapped data key, for exactly this `owner` and `field`.
    pub fn open(
        &self,
        data_key: &EncryptionKey,
        owner: &str,
        field: &str,
    ) -> Result<Secret, SealError> {
        data_key.decrypt(VERSION_KMS, owner, field, &self.nonce, &self.ct)
    }
}

fn associated_data(version: u8, owner: &str, field: &str) -> Vec<u8> {
    // Length-prefixed so that ("a:b", "c") and ("a", "b:c") cannot collide.
    let mut aad = Vec::with_capacity(16 + owner.len() + field.len());
    aad.extend_from_slice(b"molecule-envelope");
    aad.push(version);
    for part in [owner, field] {
        aad.extend_from_slice(&(part.len() as u32).to_be_bytes());
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> EncryptionKey {
        EncryptionKey::generate()
    }

    #[test]
    fn round_trip_and_fresh_nonces() {
        let k = key();
        let a = k.seal("org-a", "admin_token", "s3cret");
        let b = k.seal("org-a", "admin_token", "s3cret");
        assert_ne!(a, b, "two encryptions of one plaintext must differ");
        assert_eq!(
            k.open("org-a", "admin_token", &a).unwrap().expose(),
            "s3cret"
        );
    }

    #[test]
    fn bound_to_owner_and_field() {
        let k = key();
        let sealed = k.seal("org-a", "admin_token", "s3cret");
        assert_eq!(
            k.open("org-b", "admin_token", &sealed).unwrap_err(),
            SealError::Open
        );
        assert_eq!(
            k.open("org-a", "encryption_key", &sealed).unwrap_err(),
            SealError::Open
        );
        assert_eq!(
            key().open("org-a", "admin_token", &sealed).unwrap_err(),
            SealError::Open
        );
    }

    #[test]
    fn any_bit_flip_is_detected() {
        let k = key();
        let sealed = k.seal("o", "f", "value");
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&sealed)
            .unwrap();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut tampered = bytes.clone();
                tampered[i] ^= 1 << bit;
                let enc = base64::engine::general_purpose::STANDARD.encode(&tampered);
                assert!(
                    k.open("o", "f", &enc).is_err(),
                    "flip at byte {i} bit {bit}"
                );
            }
        }
        assert_eq!(k.open("o", "f", "AQ==").unwrap_err(), SealError::Truncated);
        assert_eq!(k.open("o", "f", "!!").unwrap_err(), SealError::Encoding);
    }

    #[test]
    fn wrapped_format_round_trips_and_binds_owner_field_and_key() {
        let data_key = key();
        let wrapped = b"kms-ciphertext-blob".to_vec();
        let sealed = data_key
            .seal_wrapped(&wrapped, "org-a", "admin_token", "s3cret")
            .unwrap();
        assert_eq!(sealed_version(&sealed).unwrap(), VERSION_KMS);
        let env = WrappedEnvelope::parse(&sealed).unwrap();
        assert_eq!(env.wrapped_key, wrapped);
        assert_eq!(
            env.open(&data_key, "org-a", "admin_token")
                .unwrap()
                .expose(),
            "s3cret"
        );
        assert_eq!(
            env.open(&data_key, "org-b", "admin_token").unwrap_err(),
            SealError::Open
        );
        assert_eq!(
            env.open(&key(), "org-a", "admin_token").unwrap_err(),
            SealError::Open
        );
        // A version 1 value is not a version 2 envelope, and vice versa.
        let v1 = data_key.seal("org-a", "admin_token", "s3cret");
        assert_eq!(
            WrappedEnvelope::parse(&v1).unwrap_err(),
            SealError::UnknownVersion(1)
        );
        assert_eq!(
            data_key.open("org-a", "admin_token", &sealed).unwrap_err(),
            SealError::UnknownVersion(2)
        );
        // Truncation anywhere is an error, never a panic.
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(&sealed)
            .unwrap();
        for n in 0..bytes.len() {
            let cut = base64::engine::general_purpose::STANDARD.encode(&bytes[..n]);
            if let Ok(env) = WrappedEnvelope::parse(&cut) {
                assert!(env.open(&data_key, "org-a", "admin_token").is_err());
            }
        }
    }

    #[test]
    fn key_parsing_names_the_variable_and_hides_the_value() {
        let hex_key = "ab".repeat(32);
        assert!(EncryptionKey::parse("K", &Secret::new(hex_key).unwrap()).is_ok());
        let b64 = key().to_base64();
        assert!(EncryptionKey::parse("K", &b64).is_ok());
        let bad = Secret::new("zz-not-a-key-QWERTYUIOP").unwrap();
        let err = EncryptionKey::parse("SECRETS_ENCRYPTION_KEY", &bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("SECRETS_ENCRYPTION_KEY"), "{err}");
        assert!(!err.contains("QWERTY") && !err.contains("zz-not"), "{err}");
        // 48 bytes of base64 (a hex string mistaken for base64) is rejected, not truncated.
        let long =
            Secret::new(base64::engine::general_purpose::STANDARD.encode([7u8; 48])).unwrap();
        assert!(EncryptionKey::parse("K", &long).is_err());
    }
}
