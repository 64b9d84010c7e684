//! Secrets at rest: parameters under `/<app>-<env>/secrets/` are encrypted
//! with XChaCha20-Poly1305 before they reach the store, and the API never
//! prints them back (it shows `****`). Only the engine decrypts them, for
//! the stages that need them (the message broker's passwords).
//!
//! The key is 32 random bytes in a file (`<data dir>/secret.key` unless
//! `--secret-key-file` names another, mode 0600), created on first start.
//! Servers that share a PostgreSQL database must share the key file.
//! Rejected: deriving the key from a passphrase typed at start (it would
//! stop unattended restarts) and storing the key in the database (it would
//! sit next to what it protects).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, AeadCore, KeyInit, OsRng};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};

use crate::EngineError;

const PREFIX: &str = "enc:v1:";

/// The key that encrypts secret parameters.
#[derive(Clone)]
pub struct SecretKey(chacha20poly1305::Key);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(****)")
    }
}

impl SecretKey {
    /// Reads the key file, or creates it (0600) with a fresh random key.
    pub fn load_or_create(path: &Path) -> Result<SecretKey, EngineError> {
        let fail = |what: &str, e: std::io::Error| {
            EngineError::Internal(format!(
                "cannot {what} the secret key file {}: {e}",
                path.display()
            ))
        };
        match std::fs::read(path) {
            Ok(bytes) => {
                let raw = base64::engine::general_purpose::STANDARD
                    .decode(String::from_utf8_lossy(&bytes).trim())
                    .ok()
                    .filter(|k| k.len() == 32)
                    .ok_or_else(|| {
                        EngineError::Internal(format!(
                            "the secret key file {} does not hold a base64 32-byte key; restore it from your backup \
                             (without it, stored secrets cannot be read)",
                            path.display()
                        ))
                    })?;
                let raw: [u8; 32] = raw
                    .try_into()
                    .map_err(|_| EngineError::Internal("secret key length".into()))?;
                Ok(SecretKey(chacha20poly1305::Key::from(raw)))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let key = XChaCha20Poly1305::generate_key(&mut OsRng);
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir).map_err(|e| fail("create the directory of", e))?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| fail("create", e))?;
                let text = base64::engine::general_purpose::STANDARD.encode(&key[..]);
                file.write_all(format!("{text}\n").as_bytes())
                    .map_err(|e| fail("write", e))?;
                file.sync_all().map_err(|e| fail("write", e))?;
                Ok(SecretKey(key))
            }
            Err(e) => Err(fail("read", e)),
        }
    }

    /// A key for tests.
    pub fn random() -> SecretKey {
        SecretKey(XChaCha20Poly1305::generate_key(&mut OsRng))
    }

    pub(crate) fn encrypt(&self, plain: &str) -> Result<String, EngineError> {
        let cipher = XChaCha20Poly1305::new(&self.0);
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let sealed = cipher
            .encrypt(&nonce, plain.as_bytes())
            .map_err(|_| EngineError::Internal("cannot encrypt a secret".into()))?;
        let mut out = nonce.to_vec();
        out.extend(sealed);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// Decrypts a stored value; a value stored before encryption (no prefix) is returned as it is.
    pub(crate) fn decrypt(&self, stored: &str) -> Result<String, EngineError> {
        let Some(body) = stored.strip_prefix(PREFIX) else {
            return Ok(stored.to_owned());
        };
        let wrong = || {
            EngineError::Internal(
                "a stored secret cannot be decrypted with this server's key: is --secret-key-file the key it was \
                 written with?"
                    .into(),
            )
        };
        let raw = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|_| wrong())?;
        if raw.len() < 24 {
            return Err(wrong());
        }
        let (nonce, sealed) = raw.split_at(24);
        let nonce: [u8; 24] = nonce.try_into().map_err(|_| wrong())?;
        let plain = XChaCha20Poly1305::new(&self.0)
            .decrypt(&XNonce::from(nonce), sealed)
            .map_err(|_| wrong())?;
        String::from_utf8(plain).map_err(|_| wrong())
    }
}

/// Whether a parameter key names a secret: `/<app>-<env>/secrets/<name>`.
pub(crate) fn is_secret(key: &str) -> bool {
    key.split('/').nth(2) == Some("secrets")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_round_trip_and_tampering_or_another_key_is_refused() {
        let key = SecretKey::random();
        let stored = key.encrypt("hunter2 ünïcode").unwrap();
        assert!(stored.starts_with(PREFIX) && !stored.contains("hunter2"));
        assert_ne!(
            stored,
            key.encrypt("hunter2 ünïcode").unwrap(),
            "a fresh nonce every time"
        );
        assert_eq!(key.decrypt(&stored).unwrap(), "hunter2 ünïcode");
        let mut bytes = stored.clone().into_bytes();
        let last = bytes.len() - 3;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        assert!(key.decrypt(&String::from_utf8(bytes).unwrap()).is_err());
        assert!(SecretKey::random().decrypt(&stored).is_err());
        assert_eq!(key.decrypt("legacy plain").unwrap(), "legacy plain");
        assert!(is_secret("/shop-prod/secrets/rabbit") && !is_secret("/shop-prod/env/SECRETS"));
    }

    #[test]
    fn the_key_file_is_created_private_and_read_back() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/secret.key");
        let first = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let again = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(again.decrypt(&first.encrypt("x").unwrap()).unwrap(), "x");
        std::fs::write(&path, "not a key").unwrap();
        assert!(
            SecretKey::load_or_create(&path)
                .unwrap_err()
                .to_string()
                .contains("restore it")
        );
    }
}
