//! The API audit trail (who changed what, when) and the sync's contact change history.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::page::{decode_time_cursor, encode_time_cursor, into_page, Page, PageRequest};
use crate::{Result, Store};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiAuditRecord {
    pub audit_id: Uuid,
    pub actor: String,
    pub action: String,
    pub target: Option<String>,
    pub detail: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
}

/// One change the sync (or a review resolution) made to a contact.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContactChangeRecord {
    pub change_id: Uuid,
    pub run_id: Option<Uuid>,
    pub managed_tenant_id: Option<Uuid>,
    pub object_id: Option<String>,
    pub contact_id: Uuid,
    /// `create`, `link`, `update`, `inactivate`, `reactivate` or `review_link`.
    pub action: String,
    pub before: Option<serde_json::Value>,
    pub after: Option<serde_json::Value>,
    pub at: DateTime<Utc>,
}

type ApiAuditRow = (
    Uuid,
    String,
    String,
    Option<String>,
    Option<serde_json::Value>,
    DateTime<Utc>,
);

type ContactChangeRow = (
    Uuid,
    Option<Uuid>,
    Option<Uuid>,
    Option<String>,
    Uuid,
    String,
    Option<serde_json::Value>,
    Option<serde_json::Value>,
    DateTime<Utc>,
);

impl Store {
    /// Records a change made through the API. Platform-level actions (master key) that belong
    /// to no PSA tenant use `Uuid::nil()` as the tenant.
    pub async fn record_api_audit(
        &self,
        tenant_id: Uuid,
        actor: &str,
        action: &str,
        target: Option<&str>,
        detail: Option<&serde_json::Value>,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO api_audit (tenant_id, audit_id, actor, action, target, detail)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant_id)
        .bind(Uuid::now_v7())
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// API audit entries, newest first.
    pub async fn list_api_audit(
        &self,
        tenant_id: Uuid,
        page: &PageRequest,
    ) -> Result<Page<ApiAuditRecord>> {
        let limit = page.effective_limit();
        let after = page.cursor.as_deref().map(decode_time_cursor).transpose()?;
        let list = crate::api_queries::api_audit_list_sql(tenant_id, after, limit + 1);
        let rows: Vec<ApiAuditRow> = list.fetch_all(&self.pool).await?;
        let records = rows
            .into_iter()
            .map(
                |(audit_id, actor, action, target, detail, at)| ApiAuditRecord {
                    audit_id,
                    actor,
                    action,
                    target,
                    detail,
                    at,
                },
            )
            .collect();
        Ok(into_page(records, limit, |record: &ApiAuditRecord| {
            encode_time_cursor(record.at, record.audit_id)
        }))
    }

    /// Every recorded change of one contact, oldest first: the answer to "why did it do that?".
    pub async fn contact_history(
        &self,
        tenant_id: Uuid,
        contact_id: Uuid,
    ) -> Result<Vec<ContactChangeRecord>> {
        let rows: Vec<ContactChangeRow> = sqlx::query_as(
            "SELECT change_id, run_id, managed_tenant_id, object_id, contact_id, action, before, after, at
             FROM contact_changes WHERE tenant_id = $1 AND contact_id = $2 ORDER BY at, change_id",
        )
        .bind(tenant_id)
        .bind(contact_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(
                |(
                    change_id,
                    run_id,
                    managed_tenant_id,
                    object_id,
                    contact_id,
                    action,
                    before,
                    after,
                    at,
                )| {
                    ContactChangeRecord {
                        change_id,
                        run_id,
                        managed_tenant_id,
                        object_id,
                        contact_id,
                        action,
                        before,
                        after,
                        at,
                    }
                },
            )
            .collect())
    }
}
