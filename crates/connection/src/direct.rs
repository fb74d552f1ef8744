//! The stored token set of a PSA tenant's direct connection, as the directory crate's
//! `RefreshTokenSource` (SPEC §2.1): the refresh token is read under the connection's row lock
//! (`Store::lease_direct_token_set`, which holds across processes) and the rotated one is
//! written in the same transaction before the lock is released, so no two workers ever redeem
//! the same refresh token.
//!
//! It also keeps the connection's own delegated access token fresh: refreshed when it expires
//! within five minutes, with a second look after taking the lock so that of several workers
//! racing on an expiring token exactly one refreshes and the others use its result.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use entra_sync_directory::error::DirectoryError;
use entra_sync_directory::oauth::{
    OAuthClient, RefreshTokenSource, TokenSet, DELEGATED_SCOPES, EXPIRY_MARGIN,
};
use entra_sync_store::connection::{ConnectionStatus, DirectTokenSetRecord};
use entra_sync_store::error::StoreError;
use entra_sync_store::tokens::DirectTokenLease;
use entra_sync_store::Store;
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

/// The refresh-token source of one PSA tenant's direct connection, backed by the store.
pub struct StoredRefreshTokens {
    store: Store,
    tenant_id: Uuid,
    oauth: Arc<OAuthClient>,
    /// Where the MSP's own token is redeemed: its tenant id, or `organizations`.
    partner_tenant: String,
    /// The lease taken by `current_refresh_token`, held until `store_rotated` or `abandon`.
    /// The directory crate's cache calls those in order under its own rotation mutex.
    lease: tokio::sync::Mutex<Option<DirectTokenLease>>,
}

impl std::fmt::Debug for StoredRefreshTokens {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("StoredRefreshTokens")
            .field("tenant_id", &self.tenant_id)
            .field("partner_tenant", &self.partner_tenant)
            .finish_non_exhaustive()
    }
}

fn store_failure(error: StoreError) -> DirectoryError {
    crate::error::store_failure(&error)
}

/// How long one redemption made while holding the connection's row lock may take: a single
/// attempt (the factory's OAuth client makes one), well inside the lease's idle timeout
/// (120 s, `store::tokens`), so a slow token endpoint can never outlive the lock and lose a
/// rotated refresh token.
pub use entra_sync_directory::oauth::LEASED_REFRESH_TIMEOUT as LEASE_REFRESH_TIMEOUT;

/// A redemption that did not finish within [`LEASE_REFRESH_TIMEOUT`].
fn refresh_timed_out() -> DirectoryError {
    DirectoryError::Transient {
        code: "token_refresh_timeout".to_owned(),
        message: "the identity platform did not answer the token refresh in time".to_owned(),
        retry_after: None,
    }
}

fn record_from(token_set: &TokenSet, refresh_token: &SecretString) -> DirectTokenSetRecord {
    DirectTokenSetRecord {
        access_token: token_set.access_token.expose_secret().to_owned(),
        refresh_token: refresh_token.expose_secret().to_owned(),
        expires_at: token_set.expires_at,
        scope: token_set.scope.clone(),
    }
}

fn expires_soon(record: &DirectTokenSetRecord) -> bool {
    let margin = chrono::Duration::from_std(EXPIRY_MARGIN).unwrap_or(chrono::Duration::zero());
    record.expires_at - margin <= Utc::now()
}

impl StoredRefreshTokens {
    pub fn new(
        store: Store,
        tenant_id: Uuid,
        oauth: Arc<OAuthClient>,
        partner_tenant: impl Into<String>,
    ) -> Self {
        StoredRefreshTokens {
            store,
            tenant_id,
            oauth,
            partner_tenant: partner_tenant.into(),
            lease: tokio::sync::Mutex::new(None),
        }
    }

    /// The connection's delegated access token, refreshed (and the rotated refresh token
    /// stored) when it expires within five minutes. A grant Microsoft no longer accepts marks
    /// the connection `needs_reconnect`.
    pub async fn partner_access_token(&self) -> Result<SecretString, DirectoryError> {
        let connection = self
            .store
            .get_connection(self.tenant_id)
            .await
            .map_err(store_failure)?;
        if let Some(entra_sync_store::connection::ConnectionRecord {
            credentials: Some(entra_sync_store::connection::ConnectionCredentials::Direct(record)),
            ..
        }) = connection
        {
            if !expires_soon(&record) {
                return Ok(SecretString::from(record.access_token));
            }
        }
        let lease = self
            .store
            .lease_direct_token_set(self.tenant_id)
            .await
            .map_err(store_failure)?;
        // Another worker may have refreshed while this one waited for the lock.
        if !expires_soon(lease.token_set()) {
            let access_token = SecretString::from(lease.token_set().access_token.clone());
            lease.release().await.map_err(store_failure)?;
            return Ok(access_token);
        }
        let refresh_token = SecretString::from(lease.token_set().refresh_token.clone());
        // One short attempt: the lease is dropped (and the lock freed) with this future if the
        // caller is cancelled, and a timeout here leaves the stored token untouched.
        let redeemed = tokio::time::timeout(
            LEASE_REFRESH_TIMEOUT,
            self.oauth
                .refresh(&self.partner_tenant, &refresh_token, DELEGATED_SCOPES),
        )
        .await
        .unwrap_or_else(|_| Err(refresh_timed_out()));
        let token_set = match redeemed {
            Ok(token_set) => token_set,
            Err(error) => {
                let _ = lease.release().await;
                self.note(&error).await;
                return Err(error);
            }
        };
        // Without a new refresh token the old one stays valid (§1); keep it.
        let next_refresh = token_set.refresh_token.clone().unwrap_or(refresh_token);
        lease
            .replace(&self.store, &record_from(&token_set, &next_refresh))
            .await
            .map_err(store_failure)?;
        tracing::info!(tenant_id = %self.tenant_id, "direct connection token refreshed");
        Ok(token_set.access_token)
    }

    /// A grant Microsoft refuses belongs to the whole connection: mark it `needs_reconnect`.
    pub async fn note(&self, error: &DirectoryError) {
        if let DirectoryError::ReauthRequired { .. } = error {
            let last_error = crate::error::ErrorRecord::from_directory(error)
                .with_remediation(
                    "reconnect to Microsoft: an administrator signs in again (Connect Microsoft, POST /api/v1/integrations/entra/connect/direct)",
                )
                .to_json();
            let _ = self
                .store
                .set_connection_status(
                    self.tenant_id,
                    ConnectionStatus::NeedsReconnect,
                    Some(&last_error),
                )
                .await;
        }
    }
}

#[async_trait]
impl RefreshTokenSource for StoredRefreshTokens {
    async fn current_refresh_token(&self) -> Result<SecretString, DirectoryError> {
        let mut slot = self.lease.lock().await;
        // A lease left by a cancelled caller is given up before a new one is taken.
        if let Some(stale) = slot.take() {
            let _ = stale.release().await;
        }
        let lease = self
            .store
            .lease_direct_token_set(self.tenant_id)
            .await
            .map_err(store_failure)?;
        let refresh_token = SecretString::from(lease.token_set().refresh_token.clone());
        *slot = Some(lease);
        Ok(refresh_token)
    }

    async fn store_rotated(&self, new_refresh_token: SecretString) -> Result<(), DirectoryError> {
        let lease = self
            .lease
            .lock()
            .await
            .take()
            .ok_or_else(|| DirectoryError::Transient {
                code: "token_lease_lost".to_owned(),
                message: "the token lease was released before the rotated token was stored"
                    .to_owned(),
                retry_after: None,
            })?;
        let mut record = lease.token_set().clone();
        record.refresh_token = new_refresh_token.expose_secret().to_owned();
        lease
            .replace(&self.store, &record)
            .await
            .map_err(store_failure)?;
        Ok(())
    }

    async fn abandon(&self) {
        if let Some(lease) = self.lease.lock().await.take() {
            let _ = lease.release().await;
        }
    }
}
