//! The PSA tenant's one connection to Microsoft (direct OAuth) or CIPP, and OAuth flow states.
//!
//! Credentials of the active kind are a single AES-256-GCM record in the connection row. Saving
//! one kind writes the whole record in one UPDATE, so the other kind's credentials disappear
//! in the same commit that stores the new ones — never before.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::FromRow;
use uuid::Uuid;

use crate::crypto::{sha256, Sealed};
use crate::error::StoreError;
use crate::{Result, Store};

const CONNECTION_PURPOSE: &str = "connection";
const OAUTH_STATE_PURPOSE: &str = "oauth_state";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionKind {
    Direct,
    Cipp,
}

impl ConnectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionKind::Direct => "direct",
            ConnectionKind::Cipp => "cipp",
        }
    }

    pub fn parse(value: &str) -> Option<ConnectionKind> {
        match value {
            "direct" => Some(ConnectionKind::Direct),
            "cipp" => Some(ConnectionKind::Cipp),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionStatus {
    Disconnected,
    Connected,
    NeedsReconnect,
    ValidationFailed,
}

impl ConnectionStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectionStatus::Disconnected => "disconnected",
            ConnectionStatus::Connected => "connected",
            ConnectionStatus::NeedsReconnect => "needs_reconnect",
            ConnectionStatus::ValidationFailed => "validation_failed",
        }
    }

    pub fn parse(value: &str) -> Option<ConnectionStatus> {
        match value {
            "disconnected" => Some(ConnectionStatus::Disconnected),
            "connected" => Some(ConnectionStatus::Connected),
            "needs_reconnect" => Some(ConnectionStatus::NeedsReconnect),
            "validation_failed" => Some(ConnectionStatus::ValidationFailed),
            _ => None,
        }
    }
}

/// CIPP credentials: a pre-issued bearer token, or an API client the service mints tokens
/// with. `Debug` prints no secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum CippCredentialsRecord {
    ApiToken {
        api_token: String,
    },
    ApiClient {
        client_id: String,
        client_secret: String,
        tenant_id: String,
    },
}

impl std::fmt::Debug for CippCredentialsRecord {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CippCredentialsRecord::ApiToken { .. } => formatter
                .debug_struct("ApiToken")
                .field("api_token", &"<redacted>")
                .finish(),
            CippCredentialsRecord::ApiClient {
                client_id,
                tenant_id,
                ..
            } => formatter
                .debug_struct("ApiClient")
                .field("client_id", client_id)
                .field("client_secret", &"<redacted>")
                .field("tenant_id", tenant_id)
                .finish(),
        }
    }
}

/// The delegated token set of a direct connection, replaced as one record on every refresh.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirectTokenSetRecord {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_at: DateTime<Utc>,
    pub scope: String,
}

impl std::fmt::Debug for DirectTokenSetRecord {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DirectTokenSetRecord")
            .field("access_token", &"<redacted>")
            .field("refresh_token", &"<redacted>")
            .field("expires_at", &self.expires_at)
            .field("scope", &self.scope)
            .finish()
    }
}

/// The decrypted credentials of a connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConnectionCredentials {
    Direct(DirectTokenSetRecord),
    Cipp(CippCredentialsRecord),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionRecord {
    pub tenant_id: Uuid,
    pub kind: Option<ConnectionKind>,
    pub status: ConnectionStatus,
    pub cipp_base_url: Option<String>,
    pub credentials: Option<ConnectionCredentials>,
    /// Increases on every credential replacement; `replace_direct_token_set` compares it.
    pub credentials_version: i64,
    pub last_error: Option<serde_json::Value>,
    pub connected_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
}

/// What the OAuth callback gets back for a valid state.
#[derive(Clone, PartialEq, Eq)]
pub struct ConsumedOAuthState {
    pub tenant_id: Uuid,
    pub user_id: Uuid,
    pub code_verifier: String,
}

impl std::fmt::Debug for ConsumedOAuthState {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("ConsumedOAuthState")
            .field("tenant_id", &self.tenant_id)
            .field("user_id", &self.user_id)
            .field("code_verifier", &"<redacted>")
            .finish()
    }
}

#[derive(FromRow)]
struct ConnectionRow {
    tenant_id: Uuid,
    kind: Option<String>,
    status: String,
    credentials_ciphertext: Option<Vec<u8>>,
    credentials_nonce: Option<Vec<u8>>,
    credentials_version: i64,
    cipp_base_url: Option<String>,
    last_error: Option<serde_json::Value>,
    connected_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

impl Store {
    fn seal_credentials(
        &self,
        tenant_id: Uuid,
        credentials: &ConnectionCredentials,
    ) -> Result<Sealed> {
        let plaintext = serde_json::to_vec(credentials)
            .map_err(|_| StoreError::Encryption("credentials do not serialize"))?;
        self.encryption_key()?
            .seal(CONNECTION_PURPOSE, tenant_id, &plaintext)
    }

    async fn write_credentials(
        &self,
        tenant_id: Uuid,
        kind: ConnectionKind,
        cipp_base_url: Option<&str>,
        credentials: &ConnectionCredentials,
    ) -> Result<ConnectionRecord> {
        let sealed = self.seal_credentials(tenant_id, credentials)?;
        sqlx::query(
            "INSERT INTO connections (tenant_id, kind, status, credentials_ciphertext,
                                      credentials_nonce, credentials_version, cipp_base_url,
                                      last_error, connected_at, updated_at)
             VALUES ($1, $2, 'connected', $3, $4, 1, $5, NULL, now(), now())
             ON CONFLICT (tenant_id) DO UPDATE SET
                 kind = excluded.kind,
                 status = 'connected',
                 credentials_ciphertext = excluded.credentials_ciphertext,
                 credentials_nonce = excluded.credentials_nonce,
                 credentials_version = connections.credentials_version + 1,
                 cipp_base_url = excluded.cipp_base_url,
                 last_error = NULL,
                 connected_at = now(),
                 updated_at = now()",
        )
        .bind(tenant_id)
        .bind(kind.as_str())
        .bind(&sealed.ciphertext)
        .bind(&sealed.nonce)
        .bind(cipp_base_url)
        .execute(&self.pool)
        .await?;
        self.get_connection(tenant_id)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// Saves a validated CIPP connection; any direct token set is gone in the same commit.
    pub async fn save_cipp_connection(
        &self,
        tenant_id: Uuid,
        base_url: &str,
        credentials: &CippCredentialsRecord,
    ) -> Result<ConnectionRecord> {
        let base_url = base_url.trim().trim_end_matches('/');
        if !(base_url.starts_with("https://") || base_url.starts_with("http://")) {
            return Err(StoreError::Invalid("invalid_base_url".to_owned()));
        }
        self.write_credentials(
            tenant_id,
            ConnectionKind::Cipp,
            Some(base_url),
            &ConnectionCredentials::Cipp(credentials.clone()),
        )
        .await
    }

    /// Saves a probed direct token set; any CIPP credentials are gone in the same commit.
    pub async fn save_direct_connection(
        &self,
        tenant_id: Uuid,
        token_set: &DirectTokenSetRecord,
    ) -> Result<ConnectionRecord> {
        self.write_credentials(
            tenant_id,
            ConnectionKind::Direct,
            None,
            &ConnectionCredentials::Direct(token_set.clone()),
        )
        .await
    }

    /// Replaces the token set after a refresh, only if nobody replaced it since
    /// `expected_version` was read (refresh tokens rotate on every use: the loser of a race
    /// gets `Conflict("credentials_changed")` and must re-read and use the newer set).
    /// Returns the new version.
    pub async fn replace_direct_token_set(
        &self,
        tenant_id: Uuid,
        expected_version: i64,
        token_set: &DirectTokenSetRecord,
    ) -> Result<i64> {
        let sealed =
            self.seal_credentials(tenant_id, &ConnectionCredentials::Direct(token_set.clone()))?;
        let version: Option<i64> = sqlx::query_scalar(
            "UPDATE connections SET credentials_ciphertext = $3, credentials_nonce = $4,
                    credentials_version = credentials_version + 1, updated_at = now()
             WHERE tenant_id = $1 AND kind = 'direct' AND credentials_version = $2
             RETURNING credentials_version",
        )
        .bind(tenant_id)
        .bind(expected_version)
        .bind(&sealed.ciphertext)
        .bind(&sealed.nonce)
        .fetch_optional(&self.pool)
        .await?;
        version.ok_or_else(|| StoreError::Conflict("credentials_changed".to_owned()))
    }

    /// Re-encryption on read after a key rotation: re-seals credentials read under a previous
    /// key under the current one. Compare-and-set on the old ciphertext, so a token set another
    /// worker rotated in the meantime is never overwritten with the older value.
    async fn reseal_connection(
        &self,
        tenant_id: Uuid,
        old: &Sealed,
        plaintext: &[u8],
    ) -> Result<()> {
        let sealed = self
            .encryption_key()?
            .seal(CONNECTION_PURPOSE, tenant_id, plaintext)?;
        sqlx::query(
            "UPDATE connections SET credentials_ciphertext = $3, credentials_nonce = $4
             WHERE tenant_id = $1 AND credentials_ciphertext = $2",
        )
        .bind(tenant_id)
        .bind(&old.ciphertext)
        .bind(&sealed.ciphertext)
        .bind(&sealed.nonce)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The connection with its credentials decrypted, or None if the tenant never connected.
    /// Credentials still sealed under a previous key are re-sealed under the current one.
    pub async fn get_connection(&self, tenant_id: Uuid) -> Result<Option<ConnectionRecord>> {
        let row: Option<ConnectionRow> = sqlx::query_as(
            "SELECT tenant_id, kind, status, credentials_ciphertext, credentials_nonce,
                    credentials_version, cipp_base_url, last_error, connected_at, updated_at
             FROM connections WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let credentials = match (row.credentials_ciphertext, row.credentials_nonce) {
            (Some(ciphertext), Some(nonce)) => {
                let sealed = Sealed { ciphertext, nonce };
                let opened =
                    self.encryption_key()?
                        .open_checked(CONNECTION_PURPOSE, tenant_id, &sealed)?;
                if !opened.under_current_key {
                    self.reseal_connection(tenant_id, &sealed, &opened.plaintext)
                        .await?;
                }
                Some(
                    serde_json::from_slice(&opened.plaintext)
                        .map_err(|_| StoreError::Encryption("stored credentials are malformed"))?,
                )
            }
            _ => None,
        };
        Ok(Some(ConnectionRecord {
            tenant_id: row.tenant_id,
            kind: row.kind.as_deref().and_then(ConnectionKind::parse),
            status: ConnectionStatus::parse(&row.status)
                .ok_or_else(|| StoreError::Invalid("unknown_connection_status".to_owned()))?,
            cipp_base_url: row.cipp_base_url,
            credentials,
            credentials_version: row.credentials_version,
            last_error: row.last_error,
            connected_at: row.connected_at,
            updated_at: row.updated_at,
        }))
    }

    /// Records a status change (e.g. `needs_reconnect` after a `reauth_required` error).
    pub async fn set_connection_status(
        &self,
        tenant_id: Uuid,
        status: ConnectionStatus,
        last_error: Option<&serde_json::Value>,
    ) -> Result<()> {
        let updated = sqlx::query(
            "UPDATE connections SET status = $2, last_error = $3, updated_at = now()
             WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .bind(status.as_str())
        .bind(last_error)
        .execute(&self.pool)
        .await?
        .rows_affected();
        if updated == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }

    /// Connections currently `connected`, across every PSA tenant (the active-connections
    /// metric of SPEC §9).
    pub async fn count_connected(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM connections WHERE status = 'connected'")
                .fetch_one(&self.pool)
                .await?,
        )
    }

    /// Clears credentials and marks the connection disconnected; mappings, runs, links and
    /// contacts stay.
    pub async fn disconnect(&self, tenant_id: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE connections SET kind = NULL, status = 'disconnected',
                    credentials_ciphertext = NULL, credentials_nonce = NULL,
                    credentials_version = credentials_version + 1, cipp_base_url = NULL,
                    last_error = NULL, connected_at = NULL, updated_at = now()
             WHERE tenant_id = $1",
        )
        .bind(tenant_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Stores an OAuth `state` (hashed) with its PKCE verifier (encrypted), bound to the PSA
    /// tenant and user that started the flow.
    pub async fn create_oauth_state(
        &self,
        tenant_id: Uuid,
        user_id: Uuid,
        state: &str,
        code_verifier: &str,
        expires_at: DateTime<Utc>,
    ) -> Result<()> {
        // Expired states are purged whenever a flow starts, so the table stays bounded without
        // a scheduled job; a day's grace keeps "this sign-in link expired" distinguishable
        // from an unknown state for a late callback.
        self.purge_expired_oauth_states().await?;
        let sealed = self.encryption_key()?.seal(
            OAUTH_STATE_PURPOSE,
            tenant_id,
            code_verifier.as_bytes(),
        )?;
        sqlx::query(
            "INSERT INTO oauth_states (tenant_id, state_hash, user_id, code_verifier_ciphertext,
                                       code_verifier_nonce, expires_at)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant_id)
        .bind(sha256(state))
        .bind(user_id)
        .bind(&sealed.ciphertext)
        .bind(&sealed.nonce)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Uses up a state exactly once. Unknown: `NotFound`; already used:
    /// `Conflict("oauth_state_used")`; expired: `Invalid("oauth_state_expired")`; presented
    /// with credentials of another PSA tenant than the one that started the flow:
    /// `Conflict("oauth_state_tenant_mismatch")`. A rejected state changes nothing.
    pub async fn consume_oauth_state(
        &self,
        state: &str,
        presented_tenant: Option<Uuid>,
    ) -> Result<ConsumedOAuthState> {
        let state_hash = sha256(state);
        // A callback carrying another PSA tenant's credentials is refused without using the
        // state up, so the admin who started the flow can still finish it.
        let consumed: Option<(Uuid, Uuid, Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "UPDATE oauth_states SET used_at = now()
             WHERE state_hash = $1 AND used_at IS NULL AND expires_at > now()
               AND ($2::uuid IS NULL OR tenant_id = $2)
             RETURNING tenant_id, user_id, code_verifier_ciphertext, code_verifier_nonce",
        )
        .bind(&state_hash)
        .bind(presented_tenant)
        .fetch_optional(&self.pool)
        .await?;
        let Some((tenant_id, user_id, ciphertext, nonce)) = consumed else {
            let found: Option<(bool, bool, Uuid)> = sqlx::query_as(
                "SELECT used_at IS NOT NULL, expires_at <= now(), tenant_id
                 FROM oauth_states WHERE state_hash = $1 LIMIT 1",
            )
            .bind(&state_hash)
            .fetch_optional(&self.pool)
            .await?;
            return Err(match found {
                None => StoreError::NotFound,
                Some((true, _, _)) => StoreError::Conflict("oauth_state_used".to_owned()),
                Some((false, true, _)) => StoreError::Invalid("oauth_state_expired".to_owned()),
                Some((false, false, owner)) if Some(owner) != presented_tenant => {
                    StoreError::Conflict("oauth_state_tenant_mismatch".to_owned())
                }
                Some(_) => StoreError::Conflict("oauth_state_used".to_owned()),
            });
        };
        let verifier = self.encryption_key()?.open(
            OAUTH_STATE_PURPOSE,
            tenant_id,
            &Sealed { ciphertext, nonce },
        )?;
        Ok(ConsumedOAuthState {
            tenant_id,
            user_id,
            code_verifier: String::from_utf8(verifier)
                .map_err(|_| StoreError::Encryption("stored verifier is malformed"))?,
        })
    }

    /// Deletes states that expired more than a day ago (used or not); returns how many.
    pub async fn purge_expired_oauth_states(&self) -> Result<u64> {
        Ok(
            sqlx::query("DELETE FROM oauth_states WHERE expires_at < now() - interval '1 day'")
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }
}
