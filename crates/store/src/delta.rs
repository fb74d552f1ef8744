//! Per managed tenant Graph delta links. A deltaLink carries no secret (the access token
//! travels in a header), so it is stored as text with the time Microsoft issued it; the sync
//! starts a full enumeration when it is older than Microsoft keeps delta state.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::{Result, Store};

impl Store {
    /// The saved delta link and when it was issued, if any.
    pub async fn get_delta_state(
        &self,
        tenant_id: Uuid,
        managed_tenant_id: Uuid,
    ) -> Result<Option<(String, DateTime<Utc>)>> {
        Ok(sqlx::query_as(
            "SELECT delta_link, issued_at FROM delta_state
             WHERE tenant_id = $1 AND managed_tenant_id = $2",
        )
        .bind(tenant_id)
        .bind(managed_tenant_id)
        .fetch_optional(&self.pool)
        .await?)
    }

    pub async fn save_delta_state(
        &self,
        tenant_id: Uuid,
        managed_tenant_id: Uuid,
        delta_link: &str,
        issued_at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO delta_state (tenant_id, managed_tenant_id, delta_link, issued_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (tenant_id, managed_tenant_id) DO UPDATE SET
                 delta_link = excluded.delta_link, issued_at = excluded.issued_at, updated_at = now()",
        )
        .bind(tenant_id)
        .bind(managed_tenant_id)
        .bind(delta_link)
        .bind(issued_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets the delta link (after a 410 or `resyncRequired`): the next sync is full.
    pub async fn clear_delta_state(&self, tenant_id: Uuid, managed_tenant_id: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM delta_state WHERE tenant_id = $1 AND managed_tenant_id = $2")
            .bind(tenant_id)
            .bind(managed_tenant_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
