//! Secrets at rest: values under [`ENCRYPTED_PREFIXES`] are stored AES-256-GCM encrypted in
//! Kubernetes' envelope format `k8s:enc:aesgcm:v1:<key name>:<12-byte nonce><ciphertext+tag>`;
//! reads decrypt transparently, so the API, lists and watch events see plaintext.
//!
//! The key file (`--encryption-key-file`, created at first start with mode 0600) holds one key
//! per line, `NAME:BASE64(32 bytes)`. The first key encrypts new writes; every key decrypts.
//! Rotation (as Kubernetes' EncryptionConfiguration):
//! 1. add a new key as the FIRST line (keep the old one below it) and restart the server;
//! 2. rewrite every Secret so it is encrypted under the new key:
//!    `kapsel get secrets -A -o json | kapsel replace -f -` (any update rewrites the value);
//! 3. remove the old key's line and restart.
//!
//! Values without the envelope prefix are read as they are (a store written before
//! encryption was turned on); the next write of such an object encrypts it.

use std::io::Write;
use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use bytes::Bytes;

use super::StoreError;

/// Key prefixes whose values are encrypted.
pub const ENCRYPTED_PREFIXES: [&str; 1] = ["/registry/core/secrets/"];
const ENVELOPE: &[u8] = b"k8s:enc:aesgcm:v1:";
const NONCE_LEN: usize = 12;

/// The keys, the first of which encrypts.
pub struct Encryption {
    keys: Vec<(String, Aes256Gcm)>,
}

impl std::fmt::Debug for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.keys.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Encryption").field("keys", &names).finish()
    }
}

fn bad(msg: impl Into<String>) -> StoreError {
    StoreError::Backend(msg.into())
}

impl Encryption {
    /// Parse a key file's text.
    pub fn parse(text: &str) -> Result<Self, StoreError> {
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, b64) = line.split_once(':').ok_or_else(|| {
                bad(format!(
                    "encryption key file line {}: want NAME:BASE64",
                    i + 1
                ))
            })?;
            if name.is_empty() || name.contains(':') {
                return Err(bad(format!(
                    "encryption key file line {}: bad key name",
                    i + 1
                )));
            }
            let raw = base64::engine::general_purpose::STANDARD
                .decode(b64.trim())
                .map_err(|e| bad(format!("encryption key file line {}: {e}", i + 1)))?;
            if raw.len() != 32 {
                return Err(bad(format!(
                    "encryption key file line {}: a key is 32 bytes, not {}",
                    i + 1,
                    raw.len()
                )));
            }
            let cipher = Aes256Gcm::new_from_slice(&raw).map_err(|e| bad(e.to_string()))?;
            keys.push((name.to_string(), cipher));
        }
        if keys.is_empty() {
            return Err(bad("the encryption key file holds no key"));
        }
        Ok(Encryption { keys })
    }

    /// Load the key file at `path`, creating it (mode 0600, one random key `key1`) if it does
    /// not exist.
    pub fn load_or_create(path: &Path) -> Result<Self, StoreError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                use std::os::unix::fs::OpenOptionsExt;
                let key: [u8; 32] = rand::random();
                let line = format!(
                    "key1:{}\n",
                    base64::engine::general_purpose::STANDARD.encode(key)
                );
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
                }
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(|e| bad(format!("creating {}: {e}", path.display())))?;
                f.write_all(line.as_bytes())
                    .and_then(|_| f.sync_all())
                    .map_err(|e| bad(format!("writing {}: {e}", path.display())))?;
                Self::parse(&line)
            }
            Err(e) => Err(bad(format!("reading {}: {e}", path.display()))),
        }
    }

    /// Whether values under `key` are encrypted.
    pub fn applies(key: &[u8]) -> bool {
        ENCRYPTED_PREFIXES
            .iter()
            .any(|p| key.starts_with(p.as_bytes()))
    }

    /// Encrypt `plain` under the first key.
    pub fn seal(&self, plain: &[u8]) -> Result<Vec<u8>, StoreError> {
        let (name, cipher) = &self.keys[0];
        let nonce: [u8; NONCE_LEN] = rand::random();
        let ct = cipher
            .encrypt(Nonce::from_slice(&nonce), plain)
            .map_err(|_| bad("encryption failed"))?;
        let mut out = Vec::with_capacity(ENVELOPE.len() + name.len() + 1 + NONCE_LEN + ct.len());
        out.extend_from_slice(ENVELOPE);
        out.extend_from_slice(name.as_bytes());
        out.push(b':');
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Decrypt a stored value (values without the envelope are returned as they are).
    pub fn open(&self, stored: &[u8]) -> Result<Bytes, StoreError> {
        let Some(rest) = stored.strip_prefix(ENVELOPE) else {
            return Ok(Bytes::copy_from_slice(stored));
        };
        let colon = rest
            .iter()
            .position(|b| *b == b':')
            .ok_or_else(|| bad("corrupt encrypted value"))?;
        let name = std::str::from_utf8(&rest[..colon]).map_err(|_| bad("corrupt key name"))?;
        let body = &rest[colon + 1..];
        if body.len() < NONCE_LEN {
            return Err(bad("corrupt encrypted value"));
        }
        let (_, cipher) = self
            .keys
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| bad(format!("no encryption key named {name:?} in the key file")))?;
        let (nonce, ct) = body.split_at(NONCE_LEN);
        cipher
            .decrypt(Nonce::from_slice(nonce), ct)
            .map(Bytes::from)
            .map_err(|_| {
                bad(format!(
                    "decrypting with key {name:?} failed (wrong key or corrupt value)"
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let old = Encryption::load_or_create(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Loading again reads the same key.
        let again = Encryption::load_or_create(&path).unwrap();
        let sealed = old.seal(b"hunter2").unwrap();
        assert!(sealed.starts_with(b"k8s:enc:aesgcm:v1:key1:"));
        assert!(!sealed.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(again.open(&sealed).unwrap(), &b"hunter2"[..]);
        // Two seals differ (random nonces).
        assert_ne!(old.seal(b"x").unwrap(), old.seal(b"x").unwrap());
        // Plain values pass through.
        assert_eq!(old.open(b"{\"a\":1}").unwrap(), &b"{\"a\":1}"[..]);
        // Rotation: a new first key writes, the old one still reads.
        let text = std::fs::read_to_string(&path).unwrap();
        let new_key = format!(
            "key2:{}\n",
            base64::engine::general_purpose::STANDARD.encode([7u8; 32])
        );
        let both = Encryption::parse(&format!("{new_key}{text}")).unwrap();
        assert_eq!(both.open(&sealed).unwrap(), &b"hunter2"[..]);
        let resealed = both.seal(b"hunter2").unwrap();
        assert!(resealed.starts_with(b"k8s:enc:aesgcm:v1:key2:"));
        let only_new = Encryption::parse(&new_key).unwrap();
        assert_eq!(only_new.open(&resealed).unwrap(), &b"hunter2"[..]);
        assert!(only_new.open(&sealed).is_err());
        // Tampering is detected.
        let mut t = resealed.clone();
        let n = t.len() - 1;
        t[n] ^= 1;
        assert!(only_new.open(&t).is_err());
        assert!(Encryption::parse("").is_err());
        assert!(Encryption::parse("k:c2hvcnQ=").is_err());
        assert!(Encryption::applies(b"/registry/core/secrets/default/s"));
        assert!(!Encryption::applies(b"/registry/core/configmaps/default/s"));
    }
}

#[cfg(test)]
mod store_tests {
    use std::sync::Arc;

    use bytes::Bytes;

    use super::Encryption;
    use crate::store::sled_store::{SledOptions, SledStore};
    use crate::store::{Store, StoreError};

    fn files_contain(dir: &std::path::Path, needle: &[u8]) -> bool {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if std::fs::read(&p)
                    .unwrap()
                    .windows(needle.len())
                    .any(|w| w == needle)
                {
                    return true;
                }
            }
        }
        false
    }

    #[tokio::test]
    async fn secrets_are_sealed_on_disk_and_plain_everywhere_else() {
        let dir = tempfile::tempdir().unwrap();
        let enc = Arc::new(Encryption::load_or_create(&dir.path().join("key")).unwrap());
        let db = dir.path().join("db");
        let opts = SledOptions {
            encryption: Some(enc),
            ..Default::default()
        };
        let s = SledStore::open(&db, opts.clone()).unwrap();
        let mut w = s.watch("/registry/", 0).unwrap();
        let secret = "/registry/core/secrets/default/s";
        let other = "/registry/core/configmaps/default/c";
        let (_, c) = s
            .write(|t| -> Result<(), StoreError> {
                t.put(
                    secret,
                    Bytes::from_static(b"{\"data\":\"TOPSECRET-VALUE\"}"),
                );
                t.put(other, Bytes::from_static(b"{\"data\":\"PUBLIC-VALUE\"}"));
                Ok(())
            })
            .unwrap();
        c.durable().await.unwrap();
        assert_eq!(
            s.get(secret).unwrap().unwrap(),
            &b"{\"data\":\"TOPSECRET-VALUE\"}"[..]
        );
        let l = s.list("/registry/core/secrets/", None, 0).unwrap();
        assert_eq!(l.items[0].1, &b"{\"data\":\"TOPSECRET-VALUE\"}"[..]);
        let events = w.next_batch(10).await.unwrap();
        assert!(events
            .iter()
            .any(|e| e.value.as_ref() == b"{\"data\":\"TOPSECRET-VALUE\"}"));
        // An update's previous value (read inside the transaction) is plaintext too.
        let (_, c) = s
            .write(|t| -> Result<(), StoreError> {
                assert_eq!(
                    t.get(secret)?.unwrap(),
                    &b"{\"data\":\"TOPSECRET-VALUE\"}"[..]
                );
                t.put(secret, Bytes::from_static(b"{\"data\":\"TOPSECRET-TWO\"}"));
                Ok(())
            })
            .unwrap();
        c.durable().await.unwrap();
        let ev = w.next_batch(10).await.unwrap();
        assert_eq!(
            ev[0].prev.as_deref(),
            Some(&b"{\"data\":\"TOPSECRET-VALUE\"}"[..])
        );
        // Acknowledged, not yet checkpointed: on disk in the write-ahead log, sealed there too.
        assert!(files_contain(&db, b"PUBLIC-VALUE"));
        assert!(
            !files_contain(&db, b"TOPSECRET"),
            "plaintext secret in the log"
        );
        // The watch holds the store open too: end it before reopening the files.
        drop(w);
        s.close();
        drop(s);
        assert!(
            files_contain(&db, b"PUBLIC-VALUE"),
            "the check itself must see plaintext"
        );
        assert!(!files_contain(&db, b"TOPSECRET"));
        // Reopened with the key: readable; without it: an error, not garbage.
        let s = SledStore::open(&db, opts).unwrap();
        assert_eq!(
            s.get(secret).unwrap().unwrap(),
            &b"{\"data\":\"TOPSECRET-TWO\"}"[..]
        );
        s.close();
        drop(s);
        let other_key =
            Arc::new(Encryption::parse(&format!("key1:{}", "A".repeat(43) + "=")).unwrap());
        let s = SledStore::open(
            &db,
            SledOptions {
                encryption: Some(other_key),
                ..Default::default()
            },
        )
        .unwrap();
        assert!(s.get(secret).is_err());
        s.close();
    }
}
