//! Recording failures while a run is still going: a discovery run's classified failure (so
//! the run shows what failed and what to do before its workflow ends) and a tenant's retry
//! state (`retrying`: the attempt, the last error record and when the next attempt starts).
//! The records themselves are built by the connection layer (`ErrorRecord`); the database
//! refuses a record without a class or a remediation (migration `20261204300000`).

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Result, Store};

/// The retry state of a running tenant result.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantRetryState {
    pub managed_tenant_id: Uuid,
    /// The attempt that failed (1 for the first).
    pub attempt: i32,
    pub next_attempt_at: DateTime<Utc>,
    /// The failed attempt's error record, read from the same row as the attempt, so a view
    /// built from it never shows `retrying` without the error that caused it.
    pub error: Option<serde_json::Value>,
}

impl Store {
    /// The error record a tenant result carries (the last attempt's while it runs), if any.
    pub async fn tenant_result_error(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        managed_tenant_id: Uuid,
    ) -> Result<Option<serde_json::Value>> {
        let error: Option<Option<serde_json::Value>> = sqlx::query_scalar(
            "SELECT error FROM run_tenant_results
             WHERE tenant_id = $1 AND run_id = $2 AND managed_tenant_id = $3",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(managed_tenant_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(error.flatten())
    }

    /// Records the failure of a running run (kept when the run is finished with it).
    pub async fn record_run_error(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        error: &serde_json::Value,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE runs SET error = $3
             WHERE tenant_id = $1 AND run_id = $2 AND status = 'running'",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(error)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Marks a running tenant result as waiting for its next attempt: the failed attempt, its
    /// error record and when Temporal will try again. Cleared when the tenant ends.
    pub async fn record_tenant_retry(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
        managed_tenant_id: Uuid,
        attempt: u32,
        error: &serde_json::Value,
        next_attempt_at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO run_tenant_results (tenant_id, run_id, managed_tenant_id, mode)
             VALUES ($1, $2, $3, 'full')
             ON CONFLICT (tenant_id, run_id, managed_tenant_id) DO NOTHING",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(managed_tenant_id)
        .execute(&self.pool)
        .await?;
        sqlx::query(
            "UPDATE run_tenant_results
             SET error = $4, retry_attempt = $5, next_attempt_at = $6
             WHERE tenant_id = $1 AND run_id = $2 AND managed_tenant_id = $3
               AND status = 'running'",
        )
        .bind(tenant_id)
        .bind(run_id)
        .bind(managed_tenant_id)
        .bind(error)
        .bind(i32::try_from(attempt).unwrap_or(i32::MAX))
        .bind(next_attempt_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The tenants of a run that are waiting for another attempt.
    pub async fn tenant_retry_states(
        &self,
        tenant_id: Uuid,
        run_id: Uuid,
    ) -> Result<Vec<TenantRetryState>> {
        let rows: Vec<(Uuid, i32, DateTime<Utc>, Option<serde_json::Value>)> = sqlx::query_as(
            "SELECT managed_tenant_id, retry_attempt, next_attempt_at, error
             FROM run_tenant_results
             WHERE tenant_id = $1 AND run_id = $2 AND status = 'running'
               AND retry_attempt IS NOT NULL AND next_attempt_at IS NOT NULL",
        )
        .bind(tenant_id)
        .bind(run_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(managed_tenant_id, attempt, next_attempt_at, error)| TenantRetryState {
                    managed_tenant_id,
                    attempt,
                    next_attempt_at,
                    error,
                },
            )
            .collect())
    }
}
