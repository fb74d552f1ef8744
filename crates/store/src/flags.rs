//! Feature flags: platform-wide definitions, enabled per PSA tenant. A flag not targeted at a
//! tenant is off for it.

use uuid::Uuid;

use crate::error::StoreError;
use crate::{Result, Store};

pub const UI_FLAG: &str = "entra-integration-ui";
pub const CLIENT_SYNC_ACTION_FLAG: &str = "entra-integration-client-sync-action";
pub const CIPP_FLAG: &str = "entra-integration-cipp";
pub const FIELD_SYNC_FLAG: &str = "entra-integration-field-sync";
pub const AMBIGUOUS_QUEUE_FLAG: &str = "entra-integration-ambiguous-queue";

/// The five flags of SPEC §7 (`ensure_entra_phase1_flags`).
pub const ENTRA_PHASE1_FLAGS: [&str; 5] = [
    UI_FLAG,
    CLIENT_SYNC_ACTION_FLAG,
    CIPP_FLAG,
    FIELD_SYNC_FLAG,
    AMBIGUOUS_QUEUE_FLAG,
];

impl Store {
    /// Creates the flags that do not exist yet; returns every flag name now defined.
    pub async fn ensure_flags(&self, flags: &[&str]) -> Result<Vec<String>> {
        let flags: Vec<String> = flags.iter().map(|flag| flag.trim().to_owned()).collect();
        if flags.iter().any(String::is_empty) {
            return Err(StoreError::Invalid("empty_flag_name".to_owned()));
        }
        sqlx::query(
            "INSERT INTO feature_flags (flag) SELECT * FROM UNNEST($1::text[]) ON CONFLICT DO NOTHING",
        )
        .bind(&flags)
        .execute(&self.pool)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT flag FROM feature_flags ORDER BY flag")
                .fetch_all(&self.pool)
                .await?,
        )
    }

    /// Turns a flag on or off for a tenant. `NotFound` if the flag was never ensured.
    pub async fn set_flag_tenant(&self, flag: &str, tenant_id: Uuid, enabled: bool) -> Result<()> {
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM feature_flags WHERE flag = $1)")
                .bind(flag)
                .fetch_one(&self.pool)
                .await?;
        if !exists {
            return Err(StoreError::NotFound);
        }
        sqlx::query(
            "INSERT INTO feature_flag_tenants (tenant_id, flag, enabled) VALUES ($1, $2, $3)
             ON CONFLICT (tenant_id, flag) DO UPDATE SET enabled = excluded.enabled, updated_at = now()",
        )
        .bind(tenant_id)
        .bind(flag)
        .bind(enabled)
        .execute(&self.pool)
        .await
        .map_err(|error| match StoreError::from(error) {
            StoreError::Invalid(_) => StoreError::NotFound,
            other => other,
        })?;
        Ok(())
    }

    pub async fn flag_enabled(&self, flag: &str, tenant_id: Uuid) -> Result<bool> {
        let enabled: Option<bool> = sqlx::query_scalar(
            "SELECT enabled FROM feature_flag_tenants WHERE tenant_id = $1 AND flag = $2",
        )
        .bind(tenant_id)
        .bind(flag)
        .fetch_optional(&self.pool)
        .await?;
        Ok(enabled.unwrap_or(false))
    }

    /// The flags enabled for a tenant.
    pub async fn enabled_flags(&self, tenant_id: Uuid) -> Result<Vec<String>> {
        Ok(sqlx::query_scalar(
            "SELECT flag FROM feature_flag_tenants WHERE tenant_id = $1 AND enabled ORDER BY flag",
        )
        .bind(tenant_id)
        .fetch_all(&self.pool)
        .await?)
    }
}
