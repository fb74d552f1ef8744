//! AES-256-GCM encryption of secrets at rest. Every ciphertext is bound (as associated data)
//! to its purpose and PSA tenant, so a blob copied into another row or tenant fails to
//! decrypt instead of being accepted.
//!
//! Key rotation: a ciphertext written now starts with `esk1` and the 8-byte id of the key
//! that sealed it (a fingerprint of the key, not the key), so the keyring — the current key
//! plus any previous ones — opens it with the right key. Ciphertexts written before key ids
//! existed carry no prefix; they are tried against every configured key, current first.
//! Values sealed under a previous key keep working and are re-sealed under the current key
//! whenever they are written again, or all at once by `Store::rekey`.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use uuid::Uuid;

use crate::error::StoreError;
use crate::Result;

/// What starts a ciphertext that carries its key id.
const KEY_ID_MAGIC: &[u8; 4] = b"esk1";
const KEY_ID_BYTES: usize = 8;

/// One AES-256-GCM key and its id.
struct KeyEntry {
    id: [u8; KEY_ID_BYTES],
    cipher: Aes256Gcm,
}

impl KeyEntry {
    fn new(key: [u8; 32]) -> KeyEntry {
        KeyEntry {
            id: key_id(&key),
            cipher: Aes256Gcm::new(&key.into()),
        }
    }
}

/// The id of a key: the first 8 bytes of SHA-256 over a label and the key. It names the key
/// in ciphertexts and in `rekey`'s report without revealing anything usable about it.
pub fn key_id(key: &[u8; 32]) -> [u8; KEY_ID_BYTES] {
    use sha2::Digest;
    let digest = sha2::Sha256::new()
        .chain_update(b"entra-sync-encryption-key-id:")
        .chain_update(key)
        .finalize();
    let mut id = [0u8; KEY_ID_BYTES];
    id.copy_from_slice(&digest[..KEY_ID_BYTES]);
    id
}

/// The keyring: the current key seals, every key opens. Its `Debug` prints nothing of it.
pub(crate) struct EncryptionKey {
    current: KeyEntry,
    previous: Vec<KeyEntry>,
}

/// A sealed secret: ciphertext with its tag, and the 12-byte nonce it was sealed with.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Sealed {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
}

/// An opened secret and whether it was sealed under the current key.
pub(crate) struct Opened {
    pub plaintext: Vec<u8>,
    pub under_current_key: bool,
}

impl EncryptionKey {
    pub(crate) fn new(key: [u8; 32]) -> EncryptionKey {
        EncryptionKey::with_previous(key, Vec::new())
    }

    /// The current key and the keys that were current before it.
    pub(crate) fn with_previous(current: [u8; 32], previous: Vec<[u8; 32]>) -> EncryptionKey {
        let current = KeyEntry::new(current);
        let previous = previous
            .into_iter()
            .map(KeyEntry::new)
            .filter(|entry| entry.id != current.id)
            .collect();
        EncryptionKey { current, previous }
    }

    /// Seals `plaintext` under the current key and a fresh random nonce.
    pub(crate) fn seal(&self, purpose: &str, tenant_id: Uuid, plaintext: &[u8]) -> Result<Sealed> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let associated_data = associated_data(purpose, tenant_id);
        let encrypted = self
            .current
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &associated_data,
                },
            )
            .map_err(|_| StoreError::Encryption("encryption failed"))?;
        let mut ciphertext =
            Vec::with_capacity(KEY_ID_MAGIC.len() + KEY_ID_BYTES + encrypted.len());
        ciphertext.extend_from_slice(KEY_ID_MAGIC);
        ciphertext.extend_from_slice(&self.current.id);
        ciphertext.extend_from_slice(&encrypted);
        Ok(Sealed {
            ciphertext,
            nonce: nonce.to_vec(),
        })
    }

    pub(crate) fn open(&self, purpose: &str, tenant_id: Uuid, sealed: &Sealed) -> Result<Vec<u8>> {
        self.open_checked(purpose, tenant_id, sealed)
            .map(|opened| opened.plaintext)
    }

    /// Opens `sealed` with the key its id names, or (no id) with whichever configured key
    /// opens it, and says whether that was the current key.
    pub(crate) fn open_checked(
        &self,
        purpose: &str,
        tenant_id: Uuid,
        sealed: &Sealed,
    ) -> Result<Opened> {
        if sealed.nonce.len() != 12 {
            return Err(StoreError::Encryption("stored nonce has the wrong length"));
        }
        let associated_data = associated_data(purpose, tenant_id);
        let decrypt = |entry: &KeyEntry, message: &[u8]| {
            entry
                .cipher
                .decrypt(
                    Nonce::from_slice(&sealed.nonce),
                    Payload {
                        msg: message,
                        aad: &associated_data,
                    },
                )
                .ok()
        };
        let keys = || std::iter::once(&self.current).chain(self.previous.iter());
        let prefix = KEY_ID_MAGIC.len() + KEY_ID_BYTES;
        if sealed.ciphertext.len() > prefix && sealed.ciphertext.starts_with(KEY_ID_MAGIC) {
            let id = &sealed.ciphertext[KEY_ID_MAGIC.len()..prefix];
            if let Some(entry) = keys().find(|entry| entry.id == id) {
                if let Some(plaintext) = decrypt(entry, &sealed.ciphertext[prefix..]) {
                    return Ok(Opened {
                        plaintext,
                        under_current_key: entry.id == self.current.id,
                    });
                }
            }
        }
        // A ciphertext from before key ids: whichever key opens it. (A legacy ciphertext that
        // happens to start with the marker still lands here.)
        for entry in keys() {
            if let Some(plaintext) = decrypt(entry, &sealed.ciphertext) {
                return Ok(Opened {
                    plaintext,
                    under_current_key: false,
                });
            }
        }
        Err(StoreError::Encryption(
            "stored secret does not decrypt with the current or any previous key \
             (ENTRA_SYNC_ENCRYPTION_KEY, ENTRA_SYNC_PREVIOUS_ENCRYPTION_KEYS)",
        ))
    }
}

fn associated_data(purpose: &str, tenant_id: Uuid) -> Vec<u8> {
    format!("entra-sync:{purpose}:{tenant_id}").into_bytes()
}

/// SHA-256 of a bearer secret (API keys, OAuth states): what the database stores instead of
/// the secret.
pub(crate) fn sha256(secret: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes()).to_vec()
}

/// `bytes` random bytes, base64url without padding.
pub(crate) fn random_token(bytes: usize) -> String {
    use base64::Engine;
    let mut buffer = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buffer);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buffer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_secret_opens_only_for_its_purpose_and_tenant() {
        let key = EncryptionKey::new([7u8; 32]);
        let tenant_id = Uuid::new_v4();
        let sealed = key
            .seal("connection", tenant_id, b"refresh-token")
            .expect("seal");
        assert_ne!(sealed.ciphertext, b"refresh-token".to_vec());
        assert_eq!(
            key.open("connection", tenant_id, &sealed).expect("open"),
            b"refresh-token".to_vec()
        );
        assert!(key.open("connection", Uuid::new_v4(), &sealed).is_err());
        assert!(key.open("oauth_state", tenant_id, &sealed).is_err());
        assert!(EncryptionKey::new([8u8; 32])
            .open("connection", tenant_id, &sealed)
            .is_err());
    }

    /// Seals the way the code did before key ids existed.
    fn legacy_seal(key: [u8; 32], purpose: &str, tenant_id: Uuid, plaintext: &[u8]) -> Sealed {
        let cipher = Aes256Gcm::new(&key.into());
        let nonce = [3u8; 12];
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &associated_data(purpose, tenant_id),
                },
            )
            .expect("encrypt");
        Sealed {
            ciphertext,
            nonce: nonce.to_vec(),
        }
    }

    #[test]
    fn rotated_keyring_opens_old_and_legacy_values_and_seals_under_the_new_key() {
        let (old, new) = ([1u8; 32], [2u8; 32]);
        let tenant_id = Uuid::new_v4();
        let under_old = EncryptionKey::new(old)
            .seal("connection", tenant_id, b"old-secret")
            .expect("seal");
        assert_eq!(&under_old.ciphertext[..4], b"esk1");
        assert_eq!(&under_old.ciphertext[4..12], &key_id(&old));
        let legacy = legacy_seal(old, "connection", tenant_id, b"legacy-secret");

        let rotated = EncryptionKey::with_previous(new, vec![old]);
        let opened = rotated
            .open_checked("connection", tenant_id, &under_old)
            .expect("old value opens");
        assert_eq!(opened.plaintext, b"old-secret".to_vec());
        assert!(!opened.under_current_key);
        let opened = rotated
            .open_checked("connection", tenant_id, &legacy)
            .expect("legacy value opens");
        assert_eq!(opened.plaintext, b"legacy-secret".to_vec());
        assert!(!opened.under_current_key);

        let resealed = rotated
            .seal("connection", tenant_id, &opened.plaintext)
            .expect("seal");
        assert_eq!(&resealed.ciphertext[4..12], &key_id(&new));
        // Once re-sealed, the old key can go.
        let new_only = EncryptionKey::new(new);
        let opened = new_only
            .open_checked("connection", tenant_id, &resealed)
            .expect("opens with the new key alone");
        assert!(opened.under_current_key);
        assert!(new_only.open("connection", tenant_id, &under_old).is_err());
        assert!(new_only.open("connection", tenant_id, &legacy).is_err());
        // The legacy format still opens under the key it was sealed with, when current.
        assert!(EncryptionKey::new(old)
            .open("connection", tenant_id, &legacy)
            .is_ok());
    }

    #[test]
    fn random_token_is_long_enough_for_state_and_keys() {
        assert!(random_token(32).len() >= 43);
        assert_ne!(random_token(32), random_token(32));
    }
}
