//! AES-256-GCM encryption of secrets at rest. Every ciphertext is bound (as associated data)
//! to its purpose and PSA tenant, so a blob copied into another row or tenant fails to
//! decrypt instead of being accepted.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use uuid::Uuid;

use crate::error::StoreError;
use crate::Result;

/// The key. Its `Debug` prints nothing of it.
pub(crate) struct EncryptionKey {
    cipher: Aes256Gcm,
}

/// A sealed secret: ciphertext with its tag, and the 12-byte nonce it was sealed with.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Sealed {
    pub ciphertext: Vec<u8>,
    pub nonce: Vec<u8>,
}

impl EncryptionKey {
    pub(crate) fn new(key: [u8; 32]) -> EncryptionKey {
        EncryptionKey {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// Seals `plaintext` under a fresh random nonce.
    pub(crate) fn seal(&self, purpose: &str, tenant_id: Uuid, plaintext: &[u8]) -> Result<Sealed> {
        let mut nonce = [0u8; 12];
        rand::thread_rng().fill_bytes(&mut nonce);
        let associated_data = associated_data(purpose, tenant_id);
        let ciphertext = self
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &associated_data,
                },
            )
            .map_err(|_| StoreError::Encryption("encryption failed"))?;
        Ok(Sealed {
            ciphertext,
            nonce: nonce.to_vec(),
        })
    }

    pub(crate) fn open(&self, purpose: &str, tenant_id: Uuid, sealed: &Sealed) -> Result<Vec<u8>> {
        if sealed.nonce.len() != 12 {
            return Err(StoreError::Encryption("stored nonce has the wrong length"));
        }
        let associated_data = associated_data(purpose, tenant_id);
        self.cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &associated_data,
                },
            )
            .map_err(|_| {
                StoreError::Encryption("stored secret does not decrypt with the configured key")
            })
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

    #[test]
    fn random_token_is_long_enough_for_state_and_keys() {
        assert!(random_token(32).len() >= 43);
        assert_ne!(random_token(32), random_token(32));
    }
}
