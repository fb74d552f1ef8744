//! `entra-sync rekey`: re-seals every stored secret (connection credentials and token sets,
//! pending OAuth states' PKCE verifiers) under the current encryption key, so a previous key
//! can be removed from `ENTRA_SYNC_PREVIOUS_ENCRYPTION_KEYS` afterwards. One transaction per
//! table; rows are locked (`FOR UPDATE`) so a concurrent token refresh waits rather than
//! writing between our read and our write. The plaintext and `credentials_version` do not
//! change, so workers holding the old ciphertext's plaintext are unaffected.

use uuid::Uuid;

use crate::crypto::Sealed;
use crate::{Result, Store};

const CONNECTION_PURPOSE: &str = "connection";
const OAUTH_STATE_PURPOSE: &str = "oauth_state";

/// (tenant, state hash, ciphertext, nonce) of a pending OAuth state.
type SealedStateRow = (Uuid, Vec<u8>, Vec<u8>, Vec<u8>);

/// What `rekey` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RekeyReport {
    /// Connection credentials re-sealed under the current key.
    pub connections_resealed: u64,
    /// Connection credentials that already were under the current key.
    pub connections_current: u64,
    /// Unused OAuth states re-sealed.
    pub oauth_states_resealed: u64,
}

impl Store {
    /// Re-seals every stored secret that is not under the current key. Fails, changing
    /// nothing in that table, when a value opens under no configured key.
    pub async fn rekey(&self) -> Result<RekeyReport> {
        let keyring = self.encryption_key()?;
        let mut report = RekeyReport::default();

        let mut transaction = self.pool().begin().await?;
        let rows: Vec<(Uuid, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT tenant_id, credentials_ciphertext, credentials_nonce FROM connections
             WHERE credentials_ciphertext IS NOT NULL
             ORDER BY tenant_id FOR UPDATE",
        )
        .fetch_all(&mut *transaction)
        .await?;
        for (tenant_id, ciphertext, nonce) in rows {
            let opened = keyring.open_checked(
                CONNECTION_PURPOSE,
                tenant_id,
                &Sealed { ciphertext, nonce },
            )?;
            if opened.under_current_key {
                report.connections_current += 1;
                continue;
            }
            let sealed = keyring.seal(CONNECTION_PURPOSE, tenant_id, &opened.plaintext)?;
            sqlx::query(
                "UPDATE connections SET credentials_ciphertext = $2, credentials_nonce = $3
                 WHERE tenant_id = $1",
            )
            .bind(tenant_id)
            .bind(&sealed.ciphertext)
            .bind(&sealed.nonce)
            .execute(&mut *transaction)
            .await?;
            report.connections_resealed += 1;
        }
        transaction.commit().await?;

        let mut transaction = self.pool().begin().await?;
        let states: Vec<SealedStateRow> = sqlx::query_as(
            "SELECT tenant_id, state_hash, code_verifier_ciphertext, code_verifier_nonce
             FROM oauth_states WHERE used_at IS NULL AND expires_at > now()
             ORDER BY tenant_id, state_hash FOR UPDATE",
        )
        .fetch_all(&mut *transaction)
        .await?;
        for (tenant_id, state_hash, ciphertext, nonce) in states {
            let opened = keyring.open_checked(
                OAUTH_STATE_PURPOSE,
                tenant_id,
                &Sealed { ciphertext, nonce },
            )?;
            if opened.under_current_key {
                continue;
            }
            let sealed = keyring.seal(OAUTH_STATE_PURPOSE, tenant_id, &opened.plaintext)?;
            sqlx::query(
                "UPDATE oauth_states SET code_verifier_ciphertext = $3, code_verifier_nonce = $4
                 WHERE tenant_id = $1 AND state_hash = $2",
            )
            .bind(tenant_id)
            .bind(&state_hash)
            .bind(&sealed.ciphertext)
            .bind(&sealed.nonce)
            .execute(&mut *transaction)
            .await?;
            report.oauth_states_resealed += 1;
        }
        transaction.commit().await?;
        Ok(report)
    }
}
