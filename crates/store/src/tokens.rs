//! The per-connection lock around a direct connection's token rotation (SPEC §2.1): Microsoft
//! replaces the refresh token on every use, so a worker that redeems it must hold the
//! connection row (`SELECT … FOR UPDATE`) from reading the token until the rotated one is
//! stored. Because the lock is a row lock in Postgres it holds across processes and hosts;
//! a second worker waits, then reads the token the first one stored.
//!
//! A lease is a database transaction. Committing it (`replace`) writes the new token set as one
//! encrypted record; dropping or releasing it changes nothing. The transaction sets
//! `idle_in_transaction_session_timeout`, so a lease forgotten by a crashed or cancelled caller
//! cannot hold the lock for longer than that.

use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::connection::{ConnectionCredentials, DirectTokenSetRecord};
use crate::crypto::Sealed;
use crate::error::StoreError;
use crate::{Result, Store};

/// Must equal the purpose `connection.rs` seals credentials with: `get_connection` opens what
/// `replace` seals (the end-to-end test `direct_concurrent_refreshes_rotate_once_across_processes`
/// reads a replaced token set back through it, so a drift fails there).
const CONNECTION_PURPOSE: &str = "connection";

/// How long a lease may sit idle (for example waiting on a hung token request) before Postgres
/// ends it and frees the row. Longer than any token request the HTTP client allows.
const LEASE_IDLE_TIMEOUT: &str = "120s";

/// How long a worker waits for another worker's lease before giving up (a transient error).
const LEASE_WAIT_TIMEOUT: &str = "60s";

/// kind, credentials ciphertext and nonce, credentials version.
type LockedConnectionRow = (Option<String>, Option<Vec<u8>>, Option<Vec<u8>>, i64);

/// The locked token set of one direct connection.
pub struct DirectTokenLease {
    tenant_id: Uuid,
    transaction: Transaction<'static, Postgres>,
    token_set: DirectTokenSetRecord,
    credentials_version: i64,
}

impl std::fmt::Debug for DirectTokenLease {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("DirectTokenLease")
            .field("tenant_id", &self.tenant_id)
            .field("token_set", &self.token_set)
            .field("credentials_version", &self.credentials_version)
            .finish()
    }
}

impl DirectTokenLease {
    /// The token set as stored when the lock was taken.
    pub fn token_set(&self) -> &DirectTokenSetRecord {
        &self.token_set
    }

    pub fn credentials_version(&self) -> i64 {
        self.credentials_version
    }

    /// Replaces the token set and commits, which releases the lock. Returns the new version.
    pub async fn replace(mut self, store: &Store, token_set: &DirectTokenSetRecord) -> Result<i64> {
        let plaintext = serde_json::to_vec(&ConnectionCredentials::Direct(token_set.clone()))
            .map_err(|_| StoreError::Encryption("credentials do not serialize"))?;
        let sealed =
            store
                .encryption_key()?
                .seal(CONNECTION_PURPOSE, self.tenant_id, &plaintext)?;
        let version: i64 = sqlx::query_scalar(
            "UPDATE connections SET credentials_ciphertext = $2, credentials_nonce = $3,
                    credentials_version = credentials_version + 1, updated_at = now()
             WHERE tenant_id = $1
             RETURNING credentials_version",
        )
        .bind(self.tenant_id)
        .bind(&sealed.ciphertext)
        .bind(&sealed.nonce)
        .fetch_one(&mut *self.transaction)
        .await?;
        self.transaction.commit().await?;
        Ok(version)
    }

    /// Gives the lock up without changing anything.
    pub async fn release(self) -> Result<()> {
        self.transaction.rollback().await?;
        Ok(())
    }
}

impl Store {
    /// Locks the direct connection of `tenant_id` and returns its token set. Waits while
    /// another worker (in any process) holds the lock. `NotFound` when the tenant has no
    /// connection; `Conflict("not_direct")` when it is not a connected direct one.
    pub async fn lease_direct_token_set(&self, tenant_id: Uuid) -> Result<DirectTokenLease> {
        let mut transaction = self.pool.begin().await?;
        sqlx::query(&format!(
            "SET LOCAL idle_in_transaction_session_timeout = '{LEASE_IDLE_TIMEOUT}'"
        ))
        .execute(&mut *transaction)
        .await?;
        sqlx::query(&format!("SET LOCAL lock_timeout = '{LEASE_WAIT_TIMEOUT}'"))
            .execute(&mut *transaction)
            .await?;
        let row: Option<LockedConnectionRow> = sqlx::query_as(
            "SELECT kind, credentials_ciphertext, credentials_nonce, credentials_version
                 FROM connections WHERE tenant_id = $1 FOR UPDATE",
        )
        .bind(tenant_id)
        .fetch_optional(&mut *transaction)
        .await?;
        let Some((kind, ciphertext, nonce, credentials_version)) = row else {
            return Err(StoreError::NotFound);
        };
        let (Some("direct"), Some(ciphertext), Some(nonce)) = (kind.as_deref(), ciphertext, nonce)
        else {
            return Err(StoreError::Conflict("not_direct".to_owned()));
        };
        let plaintext = self.encryption_key()?.open(
            CONNECTION_PURPOSE,
            tenant_id,
            &Sealed { ciphertext, nonce },
        )?;
        let credentials: ConnectionCredentials = serde_json::from_slice(&plaintext)
            .map_err(|_| StoreError::Encryption("stored credentials are malformed"))?;
        let ConnectionCredentials::Direct(token_set) = credentials else {
            return Err(StoreError::Conflict("not_direct".to_owned()));
        };
        Ok(DirectTokenLease {
            tenant_id,
            transaction,
            token_set,
            credentials_version,
        })
    }
}

/// One PSA tenant's connection as `entra-sync doctor` reports it: no credentials, only the
/// kind, the status and the code of the last recorded error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnectionHealth {
    pub tenant_id: Uuid,
    pub tenant_name: String,
    pub kind: Option<String>,
    pub status: String,
    pub last_error_code: Option<String>,
    pub last_error_message: Option<String>,
}

#[derive(sqlx::FromRow)]
struct ConnectionHealthRow {
    tenant_id: Uuid,
    tenant_name: String,
    kind: Option<String>,
    status: String,
    last_error_code: Option<String>,
    last_error_message: Option<String>,
}

impl Store {
    /// Every PSA tenant's connection state, for operators (no secret is read or decrypted).
    pub async fn connection_health(&self) -> Result<Vec<ConnectionHealth>> {
        let rows: Vec<ConnectionHealthRow> = sqlx::query_as(
            "SELECT c.tenant_id, t.name AS tenant_name, c.kind, c.status,
                    c.last_error->>'code' AS last_error_code,
                    c.last_error->>'message' AS last_error_message
             FROM connections c JOIN psa_tenants t ON t.tenant_id = c.tenant_id
             ORDER BY t.name, c.tenant_id",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| ConnectionHealth {
                tenant_id: row.tenant_id,
                tenant_name: row.tenant_name,
                kind: row.kind,
                status: row.status,
                last_error_code: row.last_error_code,
                last_error_message: row.last_error_message,
            })
            .collect())
    }
}
