//! Secrets at rest: parameters under `/<app>-<env>/secrets/` are encrypted
//! with XChaCha20-Poly1305 before they reach the store, and the API never
//! prints them back (it shows `****`). Only the engine decrypts them, for
//! the stages that need them (the message broker's passwords). Settings
//! (`/<app>-<env>/env/`) are encrypted the same way, since they carry the
//! application's own passwords, but are shown decrypted to whoever may read
//! them and handed to the application as environment variables.
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

/// The file a rotation writes the next key to before anything is re-encrypted: while it
/// exists, a rotation is unfinished.
pub fn next_key_path(key_file: &Path) -> std::path::PathBuf {
    let mut name = key_file.file_name().unwrap_or_default().to_os_string();
    name.push(".next");
    key_file.with_file_name(name)
}

/// Where a finished rotation keeps the previous key (history written before it can only be
/// read with that one).
pub fn old_key_path(key_file: &Path) -> std::path::PathBuf {
    let mut name = key_file.file_name().unwrap_or_default().to_os_string();
    name.push(".old");
    key_file.with_file_name(name)
}

/// Before the key is loaded at start: a rotation that stopped between its two renames (the
/// old key already moved aside) is finished; one that stopped earlier is refused with the way
/// out, since its secrets may be under either key.
pub fn check_rotation_state(key_file: &Path, rotating: bool) -> Result<(), EngineError> {
    let next = next_key_path(key_file);
    if !next.exists() {
        return Ok(());
    }
    if !key_file.exists() {
        std::fs::rename(&next, key_file).map_err(|e| {
            EngineError::Internal(format!(
                "cannot finish the interrupted key rotation (move {} to {}): {e}",
                next.display(),
                key_file.display()
            ))
        })?;
        return Ok(());
    }
    if rotating {
        return Ok(());
    }
    Err(EngineError::Internal(format!(
        "a secret key rotation was interrupted ({} exists): start once with --rotate-secret-key to finish it",
        next.display()
    )))
}

/// What a rotation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rotation {
    /// Secrets re-encrypted with the new key (a new version each).
    pub reencrypted: usize,
    /// Secrets already under the new key (a rotation resumed after a crash).
    pub already: usize,
}

/// Rotates the key of `key_file` (offline: run before the engine starts). Crash-safe: the new
/// key is written to `<file>.next` first; every secret's newest value is then re-encrypted
/// with it (values already under it are skipped, so running it again after a crash finishes
/// the job); only then does `<file>` become `<file>.old` and `<file>.next` become `<file>`.
pub async fn rotate_secret_key(
    store: &dyn cutover_store::Store,
    key_file: &Path,
) -> Result<Rotation, EngineError> {
    check_rotation_state(key_file, true)?;
    if !key_file.exists() {
        return Err(EngineError::Internal(format!(
            "there is no secret key at {} to rotate (a first start creates one)",
            key_file.display()
        )));
    }
    let old = SecretKey::load_or_create(key_file)?;
    let next_path = next_key_path(key_file);
    let new = SecretKey::load_or_create(&next_path)?;
    let mut done = Rotation::default();
    for p in store.param_list("/").await? {
        if !is_encrypted(&p.key) || !p.value.starts_with(PREFIX) {
            continue;
        }
        if new.decrypt(&p.value).is_ok() {
            done.already += 1;
            continue;
        }
        let plain = old.decrypt(&p.value).map_err(|_| {
            EngineError::Internal(format!(
                "{} cannot be decrypted with the current key {}, nor with the next one {}; \
                 restore the key it was written with before rotating",
                p.key,
                key_file.display(),
                next_path.display()
            ))
        })?;
        let key = cutover_store::ParamKey::parse(&p.key)?;
        store
            .param_put(&key, &new.encrypt(&plain)?, crate::SYSTEM_ACTOR, Some(p.version))
            .await?;
        done.reencrypted += 1;
    }
    let fail = |what: &str, e: std::io::Error| EngineError::Internal(format!("cannot {what}: {e}"));
    std::fs::rename(key_file, old_key_path(key_file))
        .map_err(|e| fail(&format!("move {} aside", key_file.display()), e))?;
    std::fs::rename(&next_path, key_file)
        .map_err(|e| fail(&format!("move {} into place", next_path.display()), e))?;
    Ok(done)
}

/// Whether a parameter key names a secret: `/<app>-<env>/secrets/<name>`.
pub(crate) fn is_secret(key: &str) -> bool {
    key.split('/').nth(2) == Some("secrets")
}

/// Whether a parameter is encrypted at rest: secrets and settings (`/<app>-<env>/env/<NAME>`,
/// which carry an application's own passwords). Settings, unlike secrets, are shown decrypted
/// to whoever may read them.
pub(crate) fn is_encrypted(key: &str) -> bool {
    matches!(key.split('/').nth(2), Some("secrets" | "env"))
}

impl crate::Engine {
    /// A setting's plain value from what the store holds (a value stored before settings were
    /// encrypted is plain already).
    pub(crate) fn setting_value(&self, stored: &str) -> Result<String, EngineError> {
        self.secret_key().decrypt(stored)
    }
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

    #[tokio::test]
    async fn rotation_reencrypts_every_secret_and_survives_an_interruption() {
        use cutover_store::{ParamKey, SqliteStore, Store};
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("secret.key");
        let store = SqliteStore::open_in_memory().await.unwrap();
        let first = SecretKey::load_or_create(&key_file).unwrap();
        let secret = ParamKey::parse("/shop-prod/secrets/db").unwrap();
        let setting = ParamKey::parse("/shop-prod/env/MODE").unwrap();
        store
            .param_put(&secret, &first.encrypt("s3cret").unwrap(), "alice", None)
            .await
            .unwrap();
        store.param_put(&setting, "fast", "alice", None).await.unwrap();
        let encrypted_setting = ParamKey::parse("/shop-prod/env/DB_PASSWORD").unwrap();
        store
            .param_put(
                &encrypted_setting,
                &first.encrypt("db-pw").unwrap(),
                "alice",
                None,
            )
            .await
            .unwrap();

        let done = rotate_secret_key(&store, &key_file).await.unwrap();
        assert_eq!(
            (done.reencrypted, done.already),
            (2, 0),
            "the secret and the encrypted setting"
        );
        let second = SecretKey::load_or_create(&key_file).unwrap();
        let setting_now = store.param_get(&encrypted_setting).await.unwrap().unwrap();
        assert_eq!(second.decrypt(&setting_now.value).unwrap(), "db-pw");
        let now = store.param_get(&secret).await.unwrap().unwrap();
        assert_eq!(now.version, 2, "a new version, history kept");
        assert_eq!(second.decrypt(&now.value).unwrap(), "s3cret");
        assert!(
            first.decrypt(&now.value).is_err(),
            "the old key no longer opens it"
        );
        let old = SecretKey::load_or_create(&old_key_path(&key_file)).unwrap();
        assert_eq!(
            old.decrypt(&first.encrypt("x").unwrap()).unwrap(),
            "x",
            "the old key is kept aside"
        );
        assert_eq!(
            store.param_get(&setting).await.unwrap().unwrap().version,
            1,
            "a setting stored in plain (before settings were encrypted) is left alone"
        );

        // Interrupted after the new key was written and one secret re-encrypted: a plain start
        // refuses, a rotating start finishes without re-encrypting twice.
        let next = SecretKey::load_or_create(&next_key_path(&key_file)).unwrap();
        store
            .param_put(&secret, &next.encrypt("s3cret").unwrap(), "cutover", Some(2))
            .await
            .unwrap();
        assert!(
            check_rotation_state(&key_file, false)
                .unwrap_err()
                .to_string()
                .contains("--rotate-secret-key")
        );
        let done = rotate_secret_key(&store, &key_file).await.unwrap();
        assert_eq!(
            (done.reencrypted, done.already),
            (1, 1),
            "the setting still under the old key is re-encrypted, the secret is not again"
        );
        let third = SecretKey::load_or_create(&key_file).unwrap();
        let now = store.param_get(&secret).await.unwrap().unwrap();
        assert_eq!(third.decrypt(&now.value).unwrap(), "s3cret");

        // Interrupted between the two renames: the start finishes it.
        std::fs::rename(&key_file, old_key_path(&key_file)).unwrap();
        let pending = SecretKey::random();
        std::fs::write(
            next_key_path(&key_file),
            base64::engine::general_purpose::STANDARD.encode(&pending.0[..]),
        )
        .unwrap();
        check_rotation_state(&key_file, false).unwrap();
        assert!(key_file.exists() && !next_key_path(&key_file).exists());
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
